"""Serving benchmark: Triton `generate` with continuous batching on and off, against the seeds' own serving
design (a FastAPI server around Hugging Face `generate`) on the same weights, under the same load.

In one run, on one machine, with the same prompts and greedy decoding:
- requests/s, tokens/s, TTFT and p95 latency at concurrency 1, 4 and 16 for
  (a) Triton, continuous batching on (16 slots), (b) Triton, batching off (1 slot: one sequence at a time),
  (c) the peer: FastAPI + `transformers` `LlamaForCausalLM.generate` (non-streaming, so its TTFT is its latency);
- the decode step in-process (onnxruntime in the generate stub) vs through BLS (the `lm` model), concurrency 4;
- onnxruntime vs PyTorch eager latency of one prefill (64 tokens) and one decode step (64 cached);
- quality beside speed: the greedy tokens of Triton, the peer and the training network for one prompt.
Targets at concurrency 16: continuous batching >= 3x batching off and >= 3x the peer, p95 no worse.
Every engine runs with one intra-op thread (the machine has 2 cores, shared with the load generator).

    python benchmarks/bench_serving.py [--model-config tiny] [--max-tokens 32]
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import httpx  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402
from google.protobuf import json_format  # noqa: E402
from pydantic import BaseModel  # noqa: E402

from lmforge_core.config.data import TokenizerConfig  # noqa: E402
from model.configs import get_config  # noqa: E402
from model.hf_interop import export_hf  # noqa: E402
from model.network import KVCache, build_model  # noqa: E402
from model.tokenizer import make_ref, train_bpe  # noqa: E402
from model.weights import save_model  # noqa: E402
from serving.client import Generation, LMClient  # noqa: E402
from serving.loadtest import LoadReport, summarize  # noqa: E402
from serving.onnx_export import export_onnx  # noqa: E402
from serving.onnx_files import ort_session, ort_step  # noqa: E402
from serving.triton_config import MODELS, ServingOptions, generate_config  # noqa: E402
from serving.triton_repository import scratch_repository, stage_version  # noqa: E402
from serving.triton_server import start_server, stop_pid  # noqa: E402
from serving.verify import reference_greedy  # noqa: E402

CONCURRENCY = (1, 4, 16)
TEXTS = ["The purpose of this module is", "Return a string representation of the object", "In the following section",
         "Decode a JSON document", "A dict subclass that calls a factory", "Wrap text", "named tuples are",
         "The default encoder handles"]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def build(work: Path, config_name: str):  # type: ignore[no-untyped-def]
    import pydoc

    texts = [pydoc.render_doc(m, renderer=pydoc.plaintext) for m in (json, argparse, os)]
    tok_cfg = TokenizerConfig(vocab_size=2048)
    tok = make_ref(train_bpe(texts, tok_cfg), "tok-bench", tok_cfg)
    torch.manual_seed(0)
    model = build_model(get_config(config_name, vocab_size=tok.vocab_size)).eval()
    save_model(model, work / "weights")
    export_hf(work / "weights", work / "hf", tok)
    export = export_onnx(model, work / "onnx", tok.encode(TEXTS[1]))
    return tok, model, export


def triton_load(url: str, prompts: list[list[int]], concurrency: int, max_tokens: int) -> LoadReport:
    client = LMClient(url, timeout=300)

    def one(i: int) -> Generation:
        return client.generate(prompts[i % len(prompts)], max_tokens=max_tokens, temperature=0.0)

    return _report(f"triton c={concurrency}", _drive(one, concurrency))


def _report(name: str, report: LoadReport) -> LoadReport:
    print(fmt(name, report), flush=True)
    return report


def peer_load(url: str, prompts: list[list[int]], concurrency: int, max_tokens: int) -> LoadReport:
    http = httpx.Client(timeout=300)

    def one(i: int) -> Generation:
        start = time.perf_counter()
        body = http.post(url, json={"input_ids": prompts[i % len(prompts)], "max_new_tokens": max_tokens}).json()
        total = time.perf_counter() - start
        return Generation(body["tokens"], "length", total, total, [total] * len(body["tokens"]))

    return _report("peer", _drive(one, concurrency))


# requests per worker: a level lasts several waves (with 2, the c=16 ratio swung 2-5x between runs)
WAVES = 8


def _drive(one, concurrency: int) -> LoadReport:  # type: ignore[no-untyped-def]
    requests = max(8, WAVES * concurrency)
    one(0)  # warm-up
    start = time.perf_counter()
    with ThreadPoolExecutor(max_workers=concurrency) as pool:
        results = list(pool.map(one, range(requests)))
    return summarize(results, 0, concurrency, time.perf_counter() - start)


def reload_generate(url: str, options: ServingOptions) -> None:
    import tritonclient.grpc as grpcclient

    client = grpcclient.InferenceServerClient(url)
    client.load_model("generate", config=json_format.MessageToJson(generate_config(1, options)))
    client.close()


def step_latency(model, export, threads: int = 1) -> dict[str, float]:  # type: ignore[no-untyped-def]
    torch.set_num_threads(threads)
    session = ort_session(export.onnx_path, threads=threads)
    cfg = model.config
    ids = np.random.default_rng(0).integers(0, cfg.vocab_size, (1, 64))
    empty = [np.zeros((1, cfg.kv_heads, 0, cfg.head_dim), np.float32) for _ in range(2 * cfg.n_layers)]

    def timed(fn, reps: int = 20) -> float:  # type: ignore[no-untyped-def]
        fn()
        times = []
        for _ in range(reps):
            t = time.perf_counter()
            fn()
            times.append(time.perf_counter() - t)
        return float(np.median(times) * 1000)

    _, past = ort_step(session, ids, np.arange(64)[None], np.ones((1, 64)), empty)
    cache = KVCache(cfg, 1, 65)
    with torch.inference_mode():
        model(torch.from_numpy(ids), cache=cache, start_pos=0)

        def torch_decode() -> None:
            model(torch.tensor([[5]]), cache=cache, start_pos=64)

        return {
            "ort_prefill_ms": timed(lambda: ort_step(session, ids, np.arange(64)[None], np.ones((1, 64)), empty)),
            "torch_prefill_ms": timed(lambda: model(torch.from_numpy(ids))),
            "ort_decode_ms": timed(lambda: ort_step(session, np.array([[5]]), np.array([[64]]), np.ones((1, 65)), past)),
            "torch_decode_ms": timed(torch_decode),
        }


class PeerRequest(BaseModel):
    input_ids: list[int]
    max_new_tokens: int


def run_peer_server(hf_dir: str, port: int) -> None:
    """The peer: FastAPI around Hugging Face generate (greedy), one request at a time per worker thread."""
    import uvicorn
    from fastapi import FastAPI
    from transformers import LlamaForCausalLM

    torch.set_num_threads(1)
    model = LlamaForCausalLM.from_pretrained(hf_dir).eval()
    app = FastAPI()

    @app.post("/generate")
    def generate(req: PeerRequest) -> dict:
        with torch.inference_mode():
            out = model.generate(torch.tensor([req.input_ids]), max_new_tokens=req.max_new_tokens, do_sample=False,
                                 min_new_tokens=req.max_new_tokens)
        return {"tokens": out[0, len(req.input_ids):].tolist()}

    uvicorn.run(app, host="127.0.0.1", port=port, log_level="warning")


def start_peer(hf_dir: Path) -> tuple[subprocess.Popen, str]:
    port = _free_port()
    proc = subprocess.Popen([sys.executable, __file__, "--peer-server", str(hf_dir), str(port)])
    url = f"http://127.0.0.1:{port}/generate"
    deadline = time.time() + 180
    while time.time() < deadline:
        try:
            httpx.post(url, json={"input_ids": [3], "max_new_tokens": 1}, timeout=5)
            return proc, url
        except httpx.HTTPError:
            time.sleep(0.5)
    proc.kill()
    raise RuntimeError("the FastAPI + HF peer did not start")


def fmt(name: str, r: LoadReport) -> str:
    return (f"{name:<26} c={r.concurrency:<3} {r.requests_per_s:7.2f} req/s {r.tokens_per_s:8.1f} tok/s  "
            f"TTFT p50 {r.ttft_ms_p50:8.1f} ms  p95 latency {r.latency_ms_p95:8.1f} ms")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--model-config", default="tiny")
    parser.add_argument("--max-tokens", type=int, default=32)
    parser.add_argument("--peer-server", nargs=2, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.peer_server:
        run_peer_server(args.peer_server[0], int(args.peer_server[1]))
        return
    with tempfile.TemporaryDirectory(prefix="bench-serving-") as tmp:
        work = Path(tmp)
        tok, model, export = build(work, args.model_config)
        prompts = [tok.encode(t) for t in TEXTS]
        print(f"model {args.model_config} ({model.num_params() / 1e6:.1f}M params, vocab {tok.vocab_size}); "
              f"ONNX parity max |diff| {export.parity.max_abs:.2g}; {args.max_tokens} greedy tokens per request")
        print("one step, 1 thread:", {k: round(v, 3) for k, v in step_latency(model, export).items()}, flush=True)
        staged = stage_version(work / "staging", 1, export.directory, tok, {"model_version": "bench:v1"})
        on = ServingOptions(max_slots=16, max_tokens_limit=args.max_tokens,
                            project_source=str(ROOT))
        repo = scratch_repository(staged, work / "repo", on)
        state = start_server(repo, work / "server", load=list(MODELS), ready_timeout=300)
        results: dict[str, list[LoadReport]] = {}
        try:
            reference = reference_greedy(model, prompts[0], args.max_tokens, tok.eos_ids)
            served = LMClient(state.grpc_url).generate(prompts[0], max_tokens=args.max_tokens, temperature=0.0).tokens
            print(f"quality: Triton greedy == PyTorch greedy: {served == reference}", flush=True)
            print("triton, batching on (16 slots):", flush=True)
            results["triton, batching on"] = [triton_load(state.grpc_url, prompts, c, args.max_tokens) for c in CONCURRENCY]
            reload_generate(state.grpc_url, ServingOptions(max_slots=16, max_tokens_limit=args.max_tokens,
                                                           decode_backend="bls", project_source=str(ROOT)))
            print("triton, BLS decode step:", flush=True)
            results["triton, BLS decode step"] = [triton_load(state.grpc_url, prompts, 4, args.max_tokens)]
            reload_generate(state.grpc_url, ServingOptions(max_slots=1, max_tokens_limit=args.max_tokens,
                                                           project_source=str(ROOT)))
            print("triton, batching off (1 slot):", flush=True)
            results["triton, batching off"] = [triton_load(state.grpc_url, prompts, c, args.max_tokens) for c in CONCURRENCY]
        finally:
            stop_pid(state.pid)
        peer, url = start_peer(work / "hf")
        try:
            peer_tokens = httpx.post(url, json={"input_ids": prompts[0], "max_new_tokens": args.max_tokens},
                                     timeout=300).json()["tokens"]
            print(f"quality: peer (HF, min_new_tokens forced) first tokens == PyTorch greedy: "
                  f"{peer_tokens[:len(reference)] == reference}")
            results["peer: FastAPI + HF"] = [peer_load(url, prompts, c, args.max_tokens) for c in CONCURRENCY]
        finally:
            peer.terminate()
            peer.wait(30)
    print("summary:")
    for name, reports in results.items():
        for r in reports:
            print(fmt(name, r))
    on16, off16, peer16 = (results[k][-1] for k in ("triton, batching on", "triton, batching off", "peer: FastAPI + HF"))
    bls4, inproc4 = results["triton, BLS decode step"][0], results["triton, batching on"][1]
    print(f"c=16 throughput: batching on / off = {on16.tokens_per_s / off16.tokens_per_s:.2f}x (target >= 3), "
          f"on / peer = {on16.tokens_per_s / peer16.tokens_per_s:.2f}x (target >= 3)")
    print(f"c=16 p95 latency: on {on16.latency_ms_p95:.0f} ms, off {off16.latency_ms_p95:.0f} ms, "
          f"peer {peer16.latency_ms_p95:.0f} ms")
    print(f"c=4 decode step: in-process {inproc4.tokens_per_s:.1f} tok/s vs BLS {bls4.tokens_per_s:.1f} tok/s "
          f"(in-process / BLS = {inproc4.tokens_per_s / bls4.tokens_per_s:.2f}x)")


if __name__ == "__main__":
    main()
