"""batch jobs: upload name, text column, owner, failed rows, start and finish times

Revision ID: 0004
Revises: 0003
"""

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("batch_jobs") as batch:
        batch.add_column(
            sa.Column("input_name", sa.String(length=300), nullable=False, server_default="")
        )
        batch.add_column(sa.Column("text_column", sa.String(length=200), nullable=True))
        batch.add_column(sa.Column("key_id", sa.Integer(), nullable=True))
        batch.add_column(sa.Column("rows_failed", sa.Integer(), nullable=False, server_default="0"))
        batch.add_column(sa.Column("started_at", sa.DateTime(), nullable=True))
        batch.add_column(sa.Column("finished_at", sa.DateTime(), nullable=True))
        batch.create_foreign_key("fk_batch_jobs_key_id", "api_keys", ["key_id"], ["id"])


def downgrade() -> None:
    with op.batch_alter_table("batch_jobs") as batch:
        batch.drop_constraint("fk_batch_jobs_key_id", type_="foreignkey")
        for column in (
            "finished_at",
            "started_at",
            "rows_failed",
            "key_id",
            "text_column",
            "input_name",
        ):
            batch.drop_column(column)
