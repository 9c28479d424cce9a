"""document removals: why each rejected record of a batch was removed

Revision ID: 0003_removals
Revises: 0002
Create Date: 2026-12-01 23:00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = '0003_removals'
down_revision: str | None = '0002'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table('document_removals',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('batch_id', sa.Integer(), nullable=False),
    sa.Column('shard', sa.String(length=1024), nullable=False),
    sa.Column('position', sa.Integer(), nullable=False),
    sa.Column('doc_id', sa.String(length=1024), nullable=True),
    sa.Column('reason', sa.String(length=128), nullable=False),
    sa.Column('detail', sa.Text(), nullable=True),
    sa.Column('rule', sa.String(length=128), nullable=True),
    sa.Column('score', sa.Float(), nullable=True),
    sa.Column('bound_min', sa.Float(), nullable=True),
    sa.Column('bound_max', sa.Float(), nullable=True),
    sa.Column('twin_batch_id', sa.Integer(), nullable=True),
    sa.Column('twin_shard', sa.String(length=1024), nullable=True),
    sa.Column('twin_position', sa.Integer(), nullable=True),
    sa.Column('twin_doc_id', sa.String(length=1024), nullable=True),
    sa.Column('similarity', sa.Float(), nullable=True),
    sa.Column('containment', sa.Float(), nullable=True),
    sa.ForeignKeyConstraint(['batch_id'], ['data_batches.id'],
                            name=op.f('fk_document_removals_batch_id_data_batches'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_document_removals'))
    )
    op.create_index(op.f('ix_document_removals_batch_id'), 'document_removals', ['batch_id'])
    op.create_index(op.f('ix_document_removals_twin_batch_id'), 'document_removals', ['twin_batch_id'])


def downgrade() -> None:
    op.drop_index(op.f('ix_document_removals_twin_batch_id'), table_name='document_removals')
    op.drop_index(op.f('ix_document_removals_batch_id'), table_name='document_removals')
    op.drop_table('document_removals')
