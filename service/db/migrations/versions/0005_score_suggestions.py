"""score suggestions: Perspective-style suggested scores, kept as moderator feedback

Revision ID: 0005
Revises: 0004
"""

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "score_suggestions",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("key_id", sa.Integer(), nullable=False),
        sa.Column("actor", sa.String(length=100), nullable=False),
        sa.Column("text", sa.Text(), nullable=False),
        sa.Column("attribute", sa.String(length=64), nullable=False),
        sa.Column("task", sa.String(length=32), nullable=False),
        sa.Column("label", sa.String(length=32), nullable=True),
        sa.Column("value", sa.Float(), nullable=False),
        sa.Column("community_id", sa.String(length=256), nullable=True),
        sa.Column("client_token", sa.String(length=256), nullable=True),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.ForeignKeyConstraint(["key_id"], ["api_keys.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index("ix_score_suggestions_key_id", "score_suggestions", ["key_id"])
    op.create_index("ix_score_suggestions_created_at", "score_suggestions", ["created_at"])


def downgrade() -> None:
    op.drop_index("ix_score_suggestions_created_at", table_name="score_suggestions")
    op.drop_index("ix_score_suggestions_key_id", table_name="score_suggestions")
    op.drop_table("score_suggestions")
