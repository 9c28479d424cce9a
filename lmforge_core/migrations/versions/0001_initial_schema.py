"""initial schema

Revision ID: 0001
Revises: (none)
Create Date: 2026-11-23 17:24:06.789521
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = '0001'
down_revision: str | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table('data_batches',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('source_uri', sa.String(length=1024), nullable=False),
    sa.Column('status', sa.Enum('running', 'accepted', 'quarantined', 'failed', 'empty', name='batch_status', native_enum=False, length=20), nullable=False),
    sa.Column('started_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('finished_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('records_read', sa.Integer(), nullable=False),
    sa.Column('records_accepted', sa.Integer(), nullable=False),
    sa.Column('records_rejected', sa.Integer(), nullable=False),
    sa.Column('quarantine_key', sa.String(length=1024), nullable=True),
    sa.Column('stats', sa.JSON(), nullable=False),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_data_batches'))
    )
    op.create_table('tokenizer_versions',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('version', sa.String(length=64), nullable=False),
    sa.Column('artifact_key', sa.String(length=1024), nullable=False),
    sa.Column('sha256', sa.String(length=64), nullable=False),
    sa.Column('vocab_size', sa.Integer(), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('trained_on', sa.JSON(), nullable=False),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_tokenizer_versions')),
    sa.UniqueConstraint('version', name=op.f('uq_tokenizer_versions_version'))
    )
    op.create_table('batch_reject_counts',
    sa.Column('batch_id', sa.Integer(), nullable=False),
    sa.Column('reason', sa.String(length=128), nullable=False),
    sa.Column('count', sa.Integer(), nullable=False),
    sa.ForeignKeyConstraint(['batch_id'], ['data_batches.id'], name=op.f('fk_batch_reject_counts_batch_id_data_batches'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('batch_id', 'reason', name=op.f('pk_batch_reject_counts'))
    )
    op.create_table('dataset_versions',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('version', sa.String(length=64), nullable=False),
    sa.Column('manifest_key', sa.String(length=1024), nullable=False),
    sa.Column('manifest_sha256', sa.String(length=64), nullable=False),
    sa.Column('tokenizer_id', sa.Integer(), nullable=True),
    sa.Column('train_tokens', sa.BigInteger(), nullable=False),
    sa.Column('validation_tokens', sa.BigInteger(), nullable=False),
    sa.Column('documents', sa.Integer(), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(['tokenizer_id'], ['tokenizer_versions.id'], name=op.f('fk_dataset_versions_tokenizer_id_tokenizer_versions')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_dataset_versions')),
    sa.UniqueConstraint('version', name=op.f('uq_dataset_versions_version'))
    )
    op.create_table('source_shards',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('uri', sa.String(length=2048), nullable=False),
    sa.Column('sha256', sa.String(length=64), nullable=False),
    sa.Column('size_bytes', sa.BigInteger(), nullable=False),
    sa.Column('ingested_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('batch_id', sa.Integer(), nullable=True),
    sa.Column('records_read', sa.Integer(), nullable=False),
    sa.Column('records_accepted', sa.Integer(), nullable=False),
    sa.Column('records_rejected', sa.Integer(), nullable=False),
    sa.Column('error', sa.Text(), nullable=True),
    sa.ForeignKeyConstraint(['batch_id'], ['data_batches.id'], name=op.f('fk_source_shards_batch_id_data_batches')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_source_shards')),
    sa.UniqueConstraint('sha256', name=op.f('uq_source_shards_sha256'))
    )
    with op.batch_alter_table('source_shards', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_source_shards_batch_id'), ['batch_id'], unique=False)

    op.create_table('validations',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('batch_id', sa.Integer(), nullable=False),
    sa.Column('suite_name', sa.String(length=256), nullable=False),
    sa.Column('success', sa.Boolean(), nullable=False),
    sa.Column('run_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('report_key', sa.String(length=1024), nullable=True),
    sa.Column('statistics', sa.JSON(), nullable=False),
    sa.ForeignKeyConstraint(['batch_id'], ['data_batches.id'], name=op.f('fk_validations_batch_id_data_batches')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_validations'))
    )
    with op.batch_alter_table('validations', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_validations_batch_id'), ['batch_id'], unique=False)

    op.create_table('dataset_lineage',
    sa.Column('dataset_version_id', sa.Integer(), nullable=False),
    sa.Column('batch_id', sa.Integer(), nullable=False),
    sa.ForeignKeyConstraint(['batch_id'], ['data_batches.id'], name=op.f('fk_dataset_lineage_batch_id_data_batches')),
    sa.ForeignKeyConstraint(['dataset_version_id'], ['dataset_versions.id'], name=op.f('fk_dataset_lineage_dataset_version_id_dataset_versions'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('dataset_version_id', 'batch_id', name=op.f('pk_dataset_lineage'))
    )
    op.create_table('expectation_results',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('validation_id', sa.Integer(), nullable=False),
    sa.Column('expectation_type', sa.String(length=256), nullable=False),
    sa.Column('column', sa.String(length=256), nullable=True),
    sa.Column('success', sa.Boolean(), nullable=False),
    sa.Column('observed_value', sa.JSON(), nullable=False),
    sa.Column('kwargs', sa.JSON(), nullable=False),
    sa.ForeignKeyConstraint(['validation_id'], ['validations.id'], name=op.f('fk_expectation_results_validation_id_validations'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_expectation_results'))
    )
    with op.batch_alter_table('expectation_results', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_expectation_results_validation_id'), ['validation_id'], unique=False)

    op.create_table('training_runs',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('run_id', sa.String(length=64), nullable=False),
    sa.Column('config', sa.JSON(), nullable=False),
    sa.Column('status', sa.Enum('running', 'succeeded', 'failed', 'interrupted', name='run_status', native_enum=False, length=20), nullable=False),
    sa.Column('started_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('ended_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('host', sa.String(length=256), nullable=False),
    sa.Column('dataset_version_id', sa.Integer(), nullable=True),
    sa.Column('base_model_version_id', sa.Integer(), nullable=True),
    sa.Column('resumed_from_id', sa.Integer(), nullable=True),
    sa.Column('error', sa.Text(), nullable=True),
    sa.Column('summary', sa.JSON(), nullable=False),
    sa.ForeignKeyConstraint(['dataset_version_id'], ['dataset_versions.id'], name=op.f('fk_training_runs_dataset_version_id_dataset_versions')),
    sa.ForeignKeyConstraint(['resumed_from_id'], ['training_runs.id'], name=op.f('fk_training_runs_resumed_from_id_training_runs')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_training_runs')),
    sa.UniqueConstraint('run_id', name=op.f('uq_training_runs_run_id'))
    )
    op.create_table('checkpoints',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('run_id', sa.Integer(), nullable=False),
    sa.Column('step', sa.Integer(), nullable=False),
    sa.Column('artifact_key', sa.String(length=1024), nullable=False),
    sa.Column('sha256', sa.String(length=64), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(['run_id'], ['training_runs.id'], name=op.f('fk_checkpoints_run_id_training_runs'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_checkpoints')),
    sa.UniqueConstraint('run_id', 'step', name='uq_checkpoints_run_step')
    )
    with op.batch_alter_table('checkpoints', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_checkpoints_run_id'), ['run_id'], unique=False)

    op.create_table('model_versions',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('name', sa.String(length=64), nullable=False),
    sa.Column('version', sa.Integer(), nullable=False),
    sa.Column('parent_id', sa.Integer(), nullable=True),
    sa.Column('training_run_id', sa.Integer(), nullable=True),
    sa.Column('artifacts', sa.JSON(), nullable=False),
    sa.Column('status', sa.Enum('candidate', 'approved', 'rejected', 'production', 'archived', name='model_status', native_enum=False, length=20), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(['parent_id'], ['model_versions.id'], name=op.f('fk_model_versions_parent_id_model_versions')),
    sa.ForeignKeyConstraint(['training_run_id'], ['training_runs.id'], name=op.f('fk_model_versions_training_run_id_training_runs')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_model_versions')),
    sa.UniqueConstraint('name', 'version', name='uq_model_versions_name_version')
    )
    # training_runs <-> model_versions reference each other: this key is added once both tables exist.
    with op.batch_alter_table('training_runs', schema=None) as batch_op:
        batch_op.create_foreign_key(
            op.f('fk_training_runs_base_model_version_id_model_versions'),
            'model_versions', ['base_model_version_id'], ['id'],
        )
    op.create_table('step_metrics',
    sa.Column('run_id', sa.Integer(), nullable=False),
    sa.Column('step', sa.Integer(), nullable=False),
    sa.Column('name', sa.String(length=64), nullable=False),
    sa.Column('value', sa.Float(), nullable=False),
    sa.ForeignKeyConstraint(['run_id'], ['training_runs.id'], name=op.f('fk_step_metrics_run_id_training_runs'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('run_id', 'step', 'name', name=op.f('pk_step_metrics'))
    )
    op.create_table('alias_events',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('name', sa.String(length=64), nullable=False),
    sa.Column('alias', sa.String(length=64), nullable=False),
    sa.Column('model_version_id', sa.Integer(), nullable=True),
    sa.Column('previous_version_id', sa.Integer(), nullable=True),
    sa.Column('changed_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('actor', sa.String(length=128), nullable=False),
    sa.Column('reason', sa.Text(), nullable=False),
    sa.Column('is_rollback', sa.Boolean(), nullable=False),
    sa.ForeignKeyConstraint(['model_version_id'], ['model_versions.id'], name=op.f('fk_alias_events_model_version_id_model_versions')),
    sa.ForeignKeyConstraint(['previous_version_id'], ['model_versions.id'], name=op.f('fk_alias_events_previous_version_id_model_versions')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_alias_events'))
    )
    with op.batch_alter_table('alias_events', schema=None) as batch_op:
        batch_op.create_index('ix_alias_events_name_alias_changed', ['name', 'alias', 'changed_at'], unique=False)

    op.create_table('deployments',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('model_version_id', sa.Integer(), nullable=False),
    sa.Column('repository_uri', sa.String(length=1024), nullable=False),
    sa.Column('triton_model_name', sa.String(length=128), nullable=False),
    sa.Column('triton_version', sa.Integer(), nullable=False),
    sa.Column('deployed_at', sa.DateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(['model_version_id'], ['model_versions.id'], name=op.f('fk_deployments_model_version_id_model_versions')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_deployments'))
    )
    with op.batch_alter_table('deployments', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_deployments_model_version_id'), ['model_version_id'], unique=False)

    op.create_table('evaluations',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('model_version_id', sa.Integer(), nullable=False),
    sa.Column('dataset', sa.String(length=256), nullable=False),
    sa.Column('metric', sa.String(length=128), nullable=False),
    sa.Column('slice', sa.String(length=256), nullable=False),
    sa.Column('value', sa.Float(), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('details', sa.JSON(), nullable=False),
    sa.ForeignKeyConstraint(['model_version_id'], ['model_versions.id'], name=op.f('fk_evaluations_model_version_id_model_versions')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_evaluations'))
    )
    with op.batch_alter_table('evaluations', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_evaluations_model_version_id'), ['model_version_id'], unique=False)

    op.create_table('model_aliases',
    sa.Column('name', sa.String(length=64), nullable=False),
    sa.Column('alias', sa.String(length=64), nullable=False),
    sa.Column('model_version_id', sa.Integer(), nullable=False),
    sa.Column('updated_at', sa.DateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(['model_version_id'], ['model_versions.id'], name=op.f('fk_model_aliases_model_version_id_model_versions')),
    sa.PrimaryKeyConstraint('name', 'alias', name=op.f('pk_model_aliases'))
    )
    op.create_table('reviews',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('model_version_id', sa.Integer(), nullable=False),
    sa.Column('reviewer', sa.String(length=128), nullable=False),
    sa.Column('decision', sa.Enum('approve', 'reject', 'rollback', name='review_decision', native_enum=False, length=20), nullable=False),
    sa.Column('comment', sa.Text(), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(['model_version_id'], ['model_versions.id'], name=op.f('fk_reviews_model_version_id_model_versions')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_reviews'))
    )
    with op.batch_alter_table('reviews', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_reviews_model_version_id'), ['model_version_id'], unique=False)



def downgrade() -> None:
    with op.batch_alter_table('training_runs', schema=None) as batch_op:
        batch_op.drop_constraint(
            op.f('fk_training_runs_base_model_version_id_model_versions'), type_='foreignkey'
        )
    with op.batch_alter_table('reviews', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_reviews_model_version_id'))

    op.drop_table('reviews')
    op.drop_table('model_aliases')
    with op.batch_alter_table('evaluations', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_evaluations_model_version_id'))

    op.drop_table('evaluations')
    with op.batch_alter_table('deployments', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_deployments_model_version_id'))

    op.drop_table('deployments')
    with op.batch_alter_table('alias_events', schema=None) as batch_op:
        batch_op.drop_index('ix_alias_events_name_alias_changed')

    op.drop_table('alias_events')
    op.drop_table('step_metrics')
    op.drop_table('model_versions')
    with op.batch_alter_table('checkpoints', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_checkpoints_run_id'))

    op.drop_table('checkpoints')
    op.drop_table('training_runs')
    with op.batch_alter_table('expectation_results', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_expectation_results_validation_id'))

    op.drop_table('expectation_results')
    op.drop_table('dataset_lineage')
    with op.batch_alter_table('validations', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_validations_batch_id'))

    op.drop_table('validations')
    with op.batch_alter_table('source_shards', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_source_shards_batch_id'))

    op.drop_table('source_shards')
    op.drop_table('dataset_versions')
    op.drop_table('batch_reject_counts')
    op.drop_table('tokenizer_versions')
    op.drop_table('data_batches')
