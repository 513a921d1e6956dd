"""review voters: the reviewers a review's ballot is cast for (one judgement computed once per group)

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-06 01:00:00
"""

from alembic import op
import sqlalchemy as sa


revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # Rows stored before get []: their reviewer alone (db.models.Review.cast_for).
    with op.batch_alter_table("review", schema=None) as batch_op:
        batch_op.add_column(sa.Column("voters", sa.JSON(), nullable=False, server_default="[]"))


def downgrade() -> None:
    with op.batch_alter_table("review", schema=None) as batch_op:
        batch_op.drop_column("voters")
