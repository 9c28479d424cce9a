"""serving: export to ONNX/TensorRT, the Triton model-repository writer, the local Triton launcher, clients.

Layer: libraries. May import model and lmforge_core; never Prefect, tasks, flows or dashboard.
``serving/triton_repo/`` holds the python-backend model code and config templates (no weights in git).
"""
