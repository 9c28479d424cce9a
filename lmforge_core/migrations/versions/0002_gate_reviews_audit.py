"""gate decisions, review requests, audit events

Revision ID: 0002
Revises: 0001
Create Date: 2026-12-01 23:10:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = '0002'
down_revision: str | None = '0001'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table('gate_decisions',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('model_version_id', sa.Integer(), nullable=False),
    sa.Column('verdict', sa.Enum('promote', 'needs_review', 'reject', name='gate_verdict', native_enum=False,
                                 length=20), nullable=False),
    sa.Column('baseline_model_version_id', sa.Integer(), nullable=True),
    sa.Column('checks', sa.JSON(), nullable=False),
    sa.Column('report_key', sa.String(length=1024), nullable=True),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(['model_version_id'], ['model_versions.id'],
                            name=op.f('fk_gate_decisions_model_version_id_model_versions')),
    sa.ForeignKeyConstraint(['baseline_model_version_id'], ['model_versions.id'],
                            name=op.f('fk_gate_decisions_baseline_model_version_id_model_versions')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_gate_decisions'))
    )
    op.create_index(op.f('ix_gate_decisions_model_version_id'), 'gate_decisions', ['model_version_id'])
    op.create_table('review_requests',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('model_version_id', sa.Integer(), nullable=False),
    sa.Column('status', sa.Enum('pending', 'approved', 'rejected', 'timed_out', name='review_request_status',
                                native_enum=False, length=20), nullable=False),
    sa.Column('flow_run_id', sa.String(length=64), nullable=True),
    sa.Column('reason', sa.Text(), nullable=False),
    sa.Column('requested_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('deadline', sa.DateTime(timezone=True), nullable=True),
    sa.Column('resolved_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('review_id', sa.Integer(), nullable=True),
    sa.ForeignKeyConstraint(['model_version_id'], ['model_versions.id'],
                            name=op.f('fk_review_requests_model_version_id_model_versions')),
    sa.ForeignKeyConstraint(['review_id'], ['reviews.id'], name=op.f('fk_review_requests_review_id_reviews')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_review_requests'))
    )
    op.create_index(op.f('ix_review_requests_model_version_id'), 'review_requests', ['model_version_id'])
    op.create_table('audit_events',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('actor', sa.String(length=128), nullable=False),
    sa.Column('action', sa.String(length=64), nullable=False),
    sa.Column('target', sa.String(length=256), nullable=False),
    sa.Column('source', sa.String(length=32), nullable=False),
    sa.Column('details', sa.JSON(), nullable=False),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_audit_events'))
    )
    op.create_index(op.f('ix_audit_events_at'), 'audit_events', ['at'])


def downgrade() -> None:
    op.drop_index(op.f('ix_audit_events_at'), table_name='audit_events')
    op.drop_table('audit_events')
    op.drop_index(op.f('ix_review_requests_model_version_id'), table_name='review_requests')
    op.drop_table('review_requests')
    op.drop_index(op.f('ix_gate_decisions_model_version_id'), table_name='gate_decisions')
    op.drop_table('gate_decisions')
