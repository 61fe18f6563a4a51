"""reply templates: examples, enabled, usage; decisions: template used

Revision ID: 0002
Revises: 0001
"""

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("reply_templates") as batch:
        batch.add_column(sa.Column("examples", sa.JSON(), nullable=False, server_default="[]"))
        batch.add_column(
            sa.Column("enabled", sa.Boolean(), nullable=False, server_default=sa.true())
        )
        batch.add_column(sa.Column("usage_count", sa.Integer(), nullable=False, server_default="0"))
    with op.batch_alter_table("decisions") as batch:
        batch.add_column(sa.Column("template_id", sa.Integer(), nullable=True))
        batch.create_foreign_key(
            "fk_decisions_template_id",
            "reply_templates",
            ["template_id"],
            ["id"],
            ondelete="SET NULL",
        )


def downgrade() -> None:
    with op.batch_alter_table("decisions") as batch:
        batch.drop_constraint("fk_decisions_template_id", type_="foreignkey")
        batch.drop_column("template_id")
    with op.batch_alter_table("reply_templates") as batch:
        batch.drop_column("usage_count")
        batch.drop_column("enabled")
        batch.drop_column("examples")
