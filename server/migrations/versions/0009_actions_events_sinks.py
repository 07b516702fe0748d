"""Noncompliance actions, events and sinks: the ladder state per (device, rule), device blocks, org-unit
ladders, rule exceptions, the events outbox, sinks and per-sink delivery state (docs/actions.md).

New tables only: no existing row is rewritten.

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-05
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('events',
    sa.Column('id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), autoincrement=True, nullable=False),
    sa.Column('uid', sa.String(length=36), nullable=False),
    sa.Column('type', sa.String(length=64), nullable=False),
    sa.Column('device_id', sa.String(length=36), nullable=True),
    sa.Column('org_unit_id', sa.Integer(), nullable=True),
    sa.Column('severity', sa.String(length=16), nullable=True),
    sa.Column('created_at', sa.Double(), nullable=False),
    sa.Column('body', sa.Text(), nullable=False),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_events')),
    sa.UniqueConstraint('uid', name=op.f('uq_events_uid'))
    )
    op.create_index(op.f('ix_events_created_at'), 'events', ['created_at'], unique=False)
    op.create_index(op.f('ix_events_device_id_id'), 'events', ['device_id', 'id'], unique=False)
    op.create_table('sinks',
    sa.Column('id', sa.Integer(), autoincrement=True, nullable=False),
    sa.Column('name', sa.String(length=200), nullable=False),
    sa.Column('kind', sa.String(length=16), nullable=False),
    sa.Column('config', sa.Text(), nullable=False),
    sa.Column('secret', sa.Text(), nullable=True),
    sa.Column('filters', sa.Text(), nullable=False),
    sa.Column('enabled', sa.Boolean(), server_default=sa.true(), nullable=False),
    sa.Column('created_at', sa.Double(), nullable=False),
    sa.Column('created_by', sa.String(length=200), nullable=True),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_sinks')),
    sa.UniqueConstraint('name', name=op.f('uq_sinks_name'))
    )
    op.create_table('deliveries',
    sa.Column('event_id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=False),
    sa.Column('sink_id', sa.Integer(), nullable=False),
    sa.Column('device_key', sa.String(length=36), nullable=False),
    sa.Column('state', sa.String(length=16), nullable=False),
    sa.Column('attempts', sa.Integer(), server_default='0', nullable=False),
    sa.Column('next_attempt_at', sa.Double(), nullable=False),
    sa.Column('claimed_until', sa.Double(), nullable=True),
    sa.Column('last_error', sa.Text(), nullable=True),
    sa.Column('delivered_at', sa.Double(), nullable=True),
    sa.ForeignKeyConstraint(['event_id'], ['events.id'], name=op.f('fk_deliveries_event_id_events')),
    sa.ForeignKeyConstraint(['sink_id'], ['sinks.id'], name=op.f('fk_deliveries_sink_id_sinks')),
    sa.PrimaryKeyConstraint('event_id', 'sink_id', name=op.f('pk_deliveries'))
    )
    op.create_index(op.f('ix_deliveries_sink_id_state_device_key_event_id'), 'deliveries', ['sink_id', 'state', 'device_key', 'event_id'], unique=False)
    op.create_index(op.f('ix_deliveries_sink_id_state_event_id'), 'deliveries', ['sink_id', 'state', 'event_id'], unique=False)
    op.create_table('org_unit_ladders',
    sa.Column('org_unit_id', sa.Integer(), nullable=False),
    sa.Column('actions', sa.Text(), nullable=True),
    sa.Column('contacts', sa.Text(), server_default='[]', nullable=False),
    sa.Column('language', sa.String(length=8), server_default='en', nullable=False),
    sa.Column('updated_at', sa.Double(), nullable=False),
    sa.Column('updated_by', sa.String(length=200), nullable=True),
    sa.ForeignKeyConstraint(['org_unit_id'], ['org_units.id'], name=op.f('fk_org_unit_ladders_org_unit_id_org_units')),
    sa.PrimaryKeyConstraint('org_unit_id', name=op.f('pk_org_unit_ladders'))
    )
    op.create_table('device_blocks',
    sa.Column('device_id', sa.String(length=36), nullable=False),
    sa.Column('rule_id', sa.String(length=200), nullable=False),
    sa.Column('org_unit_id', sa.Integer(), nullable=False),
    sa.Column('since', sa.Double(), nullable=False),
    sa.ForeignKeyConstraint(['device_id'], ['devices.id'], name=op.f('fk_device_blocks_device_id_devices')),
    sa.PrimaryKeyConstraint('device_id', 'rule_id', name=op.f('pk_device_blocks'))
    )
    op.create_index(op.f('ix_device_blocks_org_unit_id_since'), 'device_blocks', ['org_unit_id', 'since'], unique=False)
    op.create_table('ladder_state',
    sa.Column('device_id', sa.String(length=36), nullable=False),
    sa.Column('rule_id', sa.String(length=200), nullable=False),
    sa.Column('org_unit_id', sa.Integer(), nullable=False),
    sa.Column('severity', sa.String(length=16), nullable=False),
    sa.Column('started_at', sa.Double(), nullable=False),
    sa.Column('steps_fired', sa.Integer(), nullable=False),
    sa.Column('last_action', sa.String(length=32), nullable=True),
    sa.Column('next_action', sa.String(length=32), nullable=True),
    sa.Column('next_at', sa.Double(), nullable=True),
    sa.Column('ladder', sa.Text(), nullable=False),
    sa.Column('updated_at', sa.Double(), nullable=False),
    sa.ForeignKeyConstraint(['device_id'], ['devices.id'], name=op.f('fk_ladder_state_device_id_devices')),
    sa.PrimaryKeyConstraint('device_id', 'rule_id', name=op.f('pk_ladder_state'))
    )
    op.create_index(op.f('ix_ladder_state_next_at'), 'ladder_state', ['next_at'], unique=False)
    op.create_index(op.f('ix_ladder_state_org_unit_id_next_action_next_at'), 'ladder_state', ['org_unit_id', 'next_action', 'next_at'], unique=False)
    op.create_table('rule_exceptions',
    sa.Column('id', sa.Integer(), autoincrement=True, nullable=False),
    sa.Column('rule_id', sa.String(length=200), nullable=False),
    sa.Column('device_id', sa.String(length=36), nullable=True),
    sa.Column('org_unit_id', sa.Integer(), nullable=False),
    sa.Column('reason', sa.Text(), nullable=False),
    sa.Column('expires_at', sa.Double(), nullable=False),
    sa.Column('created_at', sa.Double(), nullable=False),
    sa.Column('created_by', sa.String(length=200), nullable=False),
    sa.Column('ended_at', sa.Double(), nullable=True),
    sa.ForeignKeyConstraint(['device_id'], ['devices.id'], name=op.f('fk_rule_exceptions_device_id_devices')),
    sa.ForeignKeyConstraint(['org_unit_id'], ['org_units.id'], name=op.f('fk_rule_exceptions_org_unit_id_org_units')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_rule_exceptions'))
    )
    op.create_index(op.f('ix_rule_exceptions_device_id_ended_at'), 'rule_exceptions', ['device_id', 'ended_at'], unique=False)
    op.create_index(op.f('ix_rule_exceptions_ended_at_expires_at'), 'rule_exceptions', ['ended_at', 'expires_at'], unique=False)
    op.create_index(op.f('ix_rule_exceptions_org_unit_id_rule_id_ended_at'), 'rule_exceptions', ['org_unit_id', 'rule_id', 'ended_at'], unique=False)


def downgrade() -> None:
    op.drop_index(op.f('ix_rule_exceptions_org_unit_id_rule_id_ended_at'), table_name='rule_exceptions')
    op.drop_index(op.f('ix_rule_exceptions_ended_at_expires_at'), table_name='rule_exceptions')
    op.drop_index(op.f('ix_rule_exceptions_device_id_ended_at'), table_name='rule_exceptions')
    op.drop_table('rule_exceptions')
    op.drop_index(op.f('ix_ladder_state_org_unit_id_next_action_next_at'), table_name='ladder_state')
    op.drop_index(op.f('ix_ladder_state_next_at'), table_name='ladder_state')
    op.drop_table('ladder_state')
    op.drop_index(op.f('ix_device_blocks_org_unit_id_since'), table_name='device_blocks')
    op.drop_table('device_blocks')
    op.drop_table('org_unit_ladders')
    op.drop_index(op.f('ix_deliveries_sink_id_state_event_id'), table_name='deliveries')
    op.drop_index(op.f('ix_deliveries_sink_id_state_device_key_event_id'), table_name='deliveries')
    op.drop_table('deliveries')
    op.drop_table('sinks')
    op.drop_index(op.f('ix_events_device_id_id'), table_name='events')
    op.drop_index(op.f('ix_events_created_at'), table_name='events')
    op.drop_table('events')
