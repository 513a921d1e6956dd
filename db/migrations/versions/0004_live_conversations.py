"""live conversations: open-ended flag, system message, earlier exchanges, chat fingerprint

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-26 00:30:00
"""

from alembic import op
import sqlalchemy as sa


revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("conversation", schema=None) as batch_op:
        batch_op.add_column(sa.Column("live", sa.Boolean(), nullable=False, server_default=sa.false()))
        batch_op.add_column(sa.Column("system", sa.Text(), nullable=True))
        batch_op.add_column(sa.Column("history", sa.JSON(), nullable=False, server_default="[]"))
        batch_op.add_column(sa.Column("fingerprint", sa.String(), nullable=True))
        batch_op.create_index("ix_conversation_fingerprint", ["fingerprint"])


def downgrade() -> None:
    with op.batch_alter_table("conversation", schema=None) as batch_op:
        batch_op.drop_index("ix_conversation_fingerprint")
        batch_op.drop_column("fingerprint")
        batch_op.drop_column("history")
        batch_op.drop_column("system")
        batch_op.drop_column("live")
