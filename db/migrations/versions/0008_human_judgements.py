"""human judgements: a person's blind pick between two runs' answers to one question (/evaluate)

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-06 06:00:00
"""

from alembic import op
import sqlalchemy as sa
import sqlmodel


revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None


def upgrade() -> None:
    text = sqlmodel.sql.sqltypes.AutoString
    op.create_table(
        "human_judgement",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("judge", text(), nullable=False),
        sa.Column("first_run", text(), nullable=False),
        sa.Column("second_run", text(), nullable=False),
        sa.Column("shown_a", text(), nullable=False),
        sa.Column("dataset", text(), nullable=False),
        sa.Column("external_id", text(), nullable=False),
        sa.Column("turn_index", sa.Integer(), nullable=False),
        sa.Column("first_conversation_id", text(), sa.ForeignKey("conversation.id"), nullable=False),
        sa.Column("second_conversation_id", text(), sa.ForeignKey("conversation.id"), nullable=False),
        sa.Column("choice", text(), nullable=False),
        sa.Column("note", sa.Text(), nullable=False),
        sa.Column("seed", sa.BigInteger(), nullable=False),
        sa.Column("created_at", sqlmodel.sql.sqltypes.UTCDateTime(), nullable=False),
        # one judgement per draw: a form sent twice stores one row
        sa.UniqueConstraint("first_run", "second_run", "seed", name="uq_human_judgement_draw"),
    )
    op.create_index("ix_human_judgement_first_run", "human_judgement", ["first_run"])
    op.create_index("ix_human_judgement_second_run", "human_judgement", ["second_run"])


def downgrade() -> None:
    op.drop_index("ix_human_judgement_second_run", table_name="human_judgement")
    op.drop_index("ix_human_judgement_first_run", table_name="human_judgement")
    op.drop_table("human_judgement")
