"""a live turn keeps its request's bounds on the answer (max_tokens, stop), so a turn sent
again by recovery runs under them too

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-06 07:20:00
"""

from alembic import op
import sqlalchemy as sa


revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("turn", schema=None) as batch_op:
        batch_op.add_column(sa.Column("max_new_tokens", sa.Integer(), nullable=True))
        batch_op.add_column(sa.Column("stop", sa.JSON(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("turn", schema=None) as batch_op:
        batch_op.drop_column("stop")
        batch_op.drop_column("max_new_tokens")
