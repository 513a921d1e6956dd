"""turn events (a running turn's stages as they happen), request keys (Idempotency-Key) and the
fingerprint a live turn was asked under (a retried request attaches to its turn)

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-06 03:30:00
"""

from alembic import op
import sqlalchemy as sa
import sqlmodel


revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "turn_event",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("conversation_id", sqlmodel.sql.sqltypes.AutoString(), sa.ForeignKey("conversation.id"), nullable=False),
        sa.Column("turn_index", sa.Integer(), nullable=False),
        sa.Column("kind", sqlmodel.sql.sqltypes.AutoString(), nullable=False),
        sa.Column("member", sqlmodel.sql.sqltypes.AutoString(), nullable=False),
        sa.Column("payload", sa.JSON(), nullable=False),
        sa.Column("created_at", sqlmodel.sql.sqltypes.UTCDateTime(), nullable=False),
    )
    op.create_index("ix_turn_event_conversation_id", "turn_event", ["conversation_id"])
    with op.batch_alter_table("turn", schema=None) as batch_op:
        batch_op.add_column(sa.Column("request_key", sqlmodel.sql.sqltypes.AutoString(), nullable=True))
        batch_op.add_column(sa.Column("history_fingerprint", sqlmodel.sql.sqltypes.AutoString(), nullable=True))
        batch_op.create_unique_constraint("uq_turn_request_key", ["request_key"])
        batch_op.create_index("ix_turn_history_fingerprint", ["history_fingerprint"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("turn", schema=None) as batch_op:
        batch_op.drop_index("ix_turn_history_fingerprint")
        batch_op.drop_constraint("uq_turn_request_key", type_="unique")
        batch_op.drop_column("history_fingerprint")
        batch_op.drop_column("request_key")
    op.drop_index("ix_turn_event_conversation_id", table_name="turn_event")
    op.drop_table("turn_event")
