"""Initial collector schema: devices, enrolment, policies, state, history, reports, users, tokens, audit.

Revision ID: 0001
Revises:
Create Date: 2026-11-29
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('audit_log',
    sa.Column('id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), autoincrement=True, nullable=False),
    sa.Column('at', sa.Double(), nullable=False),
    sa.Column('actor', sa.String(length=200), nullable=False),
    sa.Column('action', sa.String(length=100), nullable=False),
    sa.Column('target', sa.String(length=300), nullable=True),
    sa.Column('org_unit_id', sa.Integer(), nullable=True),
    sa.Column('outcome', sa.String(length=16), nullable=False),
    sa.Column('details', sa.Text(), nullable=False),
    sa.Column('remote_addr', sa.String(length=64), nullable=True),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_audit_log'))
    )
    op.create_index(op.f('ix_audit_log_action_at'), 'audit_log', ['action', 'at'], unique=False)
    op.create_index(op.f('ix_audit_log_at'), 'audit_log', ['at'], unique=False)
    op.create_index(op.f('ix_audit_log_org_unit_id_at'), 'audit_log', ['org_unit_id', 'at'], unique=False)
    op.create_table('daily_stats',
    sa.Column('day', sa.String(length=10), nullable=False),
    sa.Column('org_unit_id', sa.Integer(), nullable=False),
    sa.Column('devices', sa.Integer(), nullable=False),
    sa.Column('compliant', sa.Integer(), nullable=False),
    sa.Column('not_compliant', sa.Integer(), nullable=False),
    sa.Column('error', sa.Integer(), nullable=False),
    sa.Column('unknown', sa.Integer(), nullable=False),
    sa.Column('stale', sa.Integer(), nullable=False),
    sa.Column('rules', sa.Text(), nullable=False),
    sa.Column('computed_at', sa.Double(), nullable=False),
    sa.PrimaryKeyConstraint('day', 'org_unit_id', name=op.f('pk_daily_stats'))
    )
    op.create_table('org_units',
    sa.Column('id', sa.Integer(), autoincrement=True, nullable=False),
    sa.Column('name', sa.String(length=200), nullable=False),
    sa.Column('policy_id', sa.String(length=200), nullable=True),
    sa.Column('created_at', sa.Double(), nullable=False),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_org_units')),
    sa.UniqueConstraint('name', name=op.f('uq_org_units_name'))
    )
    op.create_table('policies',
    sa.Column('id', sa.Integer(), autoincrement=True, nullable=False),
    sa.Column('policy_id', sa.String(length=200), nullable=False),
    sa.Column('version', sa.Integer(), nullable=False),
    sa.Column('digest', sa.String(length=80), nullable=False),
    sa.Column('title', sa.Text(), nullable=False),
    sa.Column('document', sa.Text(), nullable=False),
    sa.Column('created_at', sa.Double(), nullable=False),
    sa.Column('created_by', sa.String(length=200), nullable=True),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_policies')),
    sa.UniqueConstraint('policy_id', 'version', name=op.f('uq_policies_policy_id_version'))
    )
    op.create_table('server_settings',
    sa.Column('name', sa.String(length=100), nullable=False),
    sa.Column('value', sa.Text(), nullable=False),
    sa.PrimaryKeyConstraint('name', name=op.f('pk_server_settings'))
    )
    op.create_table('users',
    sa.Column('id', sa.Integer(), autoincrement=True, nullable=False),
    sa.Column('username', sa.String(length=200), nullable=False),
    sa.Column('password_hash', sa.String(length=300), nullable=False),
    sa.Column('role', sa.String(length=16), nullable=False),
    sa.Column('created_at', sa.Double(), nullable=False),
    sa.Column('disabled_at', sa.Double(), nullable=True),
    sa.Column('last_login_at', sa.Double(), nullable=True),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_users')),
    sa.UniqueConstraint('username', name=op.f('uq_users_username'))
    )
    op.create_table('api_tokens',
    sa.Column('id', sa.Integer(), autoincrement=True, nullable=False),
    sa.Column('name', sa.String(length=200), nullable=False),
    sa.Column('token_hash', sa.String(length=64), nullable=False),
    sa.Column('prefix', sa.String(length=16), nullable=False),
    sa.Column('role', sa.String(length=16), nullable=False),
    sa.Column('user_id', sa.Integer(), nullable=True),
    sa.Column('created_at', sa.Double(), nullable=False),
    sa.Column('expires_at', sa.Double(), nullable=True),
    sa.Column('revoked_at', sa.Double(), nullable=True),
    sa.Column('last_used_at', sa.Double(), nullable=True),
    sa.ForeignKeyConstraint(['user_id'], ['users.id'], name=op.f('fk_api_tokens_user_id_users')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_api_tokens')),
    sa.UniqueConstraint('token_hash', name=op.f('uq_api_tokens_token_hash'))
    )
    op.create_table('enroll_tokens',
    sa.Column('id', sa.Integer(), autoincrement=True, nullable=False),
    sa.Column('token_hash', sa.String(length=64), nullable=False),
    sa.Column('prefix', sa.String(length=16), nullable=False),
    sa.Column('org_unit_id', sa.Integer(), nullable=False),
    sa.Column('uses_allowed', sa.Integer(), nullable=True),
    sa.Column('uses', sa.Integer(), server_default='0', nullable=False),
    sa.Column('expires_at', sa.Double(), nullable=False),
    sa.Column('created_at', sa.Double(), nullable=False),
    sa.Column('created_by', sa.String(length=200), nullable=True),
    sa.Column('revoked_at', sa.Double(), nullable=True),
    sa.ForeignKeyConstraint(['org_unit_id'], ['org_units.id'], name=op.f('fk_enroll_tokens_org_unit_id_org_units')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_enroll_tokens')),
    sa.UniqueConstraint('token_hash', name=op.f('uq_enroll_tokens_token_hash'))
    )
    op.create_index(op.f('ix_enroll_tokens_org_unit_id_created_at'), 'enroll_tokens', ['org_unit_id', 'created_at'], unique=False)
    op.create_table('user_org_units',
    sa.Column('user_id', sa.Integer(), nullable=False),
    sa.Column('org_unit_id', sa.Integer(), nullable=False),
    sa.ForeignKeyConstraint(['org_unit_id'], ['org_units.id'], name=op.f('fk_user_org_units_org_unit_id_org_units')),
    sa.ForeignKeyConstraint(['user_id'], ['users.id'], name=op.f('fk_user_org_units_user_id_users')),
    sa.PrimaryKeyConstraint('user_id', 'org_unit_id', name=op.f('pk_user_org_units'))
    )
    op.create_table('api_token_org_units',
    sa.Column('token_id', sa.Integer(), nullable=False),
    sa.Column('org_unit_id', sa.Integer(), nullable=False),
    sa.ForeignKeyConstraint(['org_unit_id'], ['org_units.id'], name=op.f('fk_api_token_org_units_org_unit_id_org_units')),
    sa.ForeignKeyConstraint(['token_id'], ['api_tokens.id'], name=op.f('fk_api_token_org_units_token_id_api_tokens')),
    sa.PrimaryKeyConstraint('token_id', 'org_unit_id', name=op.f('pk_api_token_org_units'))
    )
    op.create_table('devices',
    sa.Column('id', sa.String(length=36), nullable=False),
    sa.Column('org_unit_id', sa.Integer(), nullable=False),
    sa.Column('state', sa.String(length=16), nullable=False),
    sa.Column('public_key', sa.String(length=64), nullable=False),
    sa.Column('key_id', sa.String(length=16), nullable=False),
    sa.Column('machine_id', sa.String(length=200), nullable=False),
    sa.Column('hostname', sa.String(length=255), nullable=False),
    sa.Column('hostname_lc', sa.String(length=255), nullable=False),
    sa.Column('serial', sa.String(length=200), nullable=False),
    sa.Column('serial_lc', sa.String(length=200), nullable=False),
    sa.Column('username', sa.String(length=200), nullable=False),
    sa.Column('username_lc', sa.String(length=200), nullable=False),
    sa.Column('platform', sa.String(length=16), nullable=False),
    sa.Column('os_name', sa.String(length=200), nullable=False),
    sa.Column('os_version', sa.String(length=100), nullable=False),
    sa.Column('agent_version', sa.String(length=50), nullable=True),
    sa.Column('enrolled_at', sa.Double(), nullable=False),
    sa.Column('enroll_token_id', sa.Integer(), nullable=True),
    sa.Column('revoked_at', sa.Double(), nullable=True),
    sa.Column('replaced_by', sa.String(length=36), nullable=True),
    sa.Column('replaces', sa.String(length=36), nullable=True),
    sa.Column('last_seq', sa.BigInteger(), server_default='0', nullable=False),
    sa.Column('last_seen', sa.Double(), nullable=True),
    sa.Column('last_report_at', sa.Double(), nullable=True),
    sa.Column('last_raw_report_at', sa.Double(), nullable=True),
    sa.Column('compliance', sa.String(length=16), server_default='unknown', nullable=False),
    sa.Column('compliance_since', sa.Double(), nullable=True),
    sa.Column('fail_count', sa.Integer(), server_default='0', nullable=False),
    sa.Column('warn_count', sa.Integer(), server_default='0', nullable=False),
    sa.Column('error_count', sa.Integer(), server_default='0', nullable=False),
    sa.Column('disagreements', sa.Integer(), server_default='0', nullable=False),
    sa.Column('policy_ref', sa.String(length=300), nullable=True),
    sa.Column('agent_policy_ref', sa.String(length=300), nullable=True),
    sa.ForeignKeyConstraint(['enroll_token_id'], ['enroll_tokens.id'], name=op.f('fk_devices_enroll_token_id_enroll_tokens')),
    sa.ForeignKeyConstraint(['org_unit_id'], ['org_units.id'], name=op.f('fk_devices_org_unit_id_org_units')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_devices'))
    )
    op.create_index(op.f('ix_devices_machine_id'), 'devices', ['machine_id'], unique=False)
    op.create_index(op.f('ix_devices_org_unit_id_state_compliance'), 'devices', ['org_unit_id', 'state', 'compliance'], unique=False)
    op.create_index(op.f('ix_devices_org_unit_id_state_hostname_lc'), 'devices', ['org_unit_id', 'state', 'hostname_lc'], unique=False)
    op.create_index(op.f('ix_devices_org_unit_id_state_last_seen'), 'devices', ['org_unit_id', 'state', 'last_seen'], unique=False)
    op.create_index(op.f('ix_devices_state_compliance_last_seen'), 'devices', ['state', 'compliance', 'last_seen'], unique=False)
    op.create_index(op.f('ix_devices_state_enrolled_at'), 'devices', ['state', 'enrolled_at'], unique=False)
    op.create_index(op.f('ix_devices_state_fail_count'), 'devices', ['state', 'fail_count'], unique=False)
    op.create_index(op.f('ix_devices_state_hostname_lc'), 'devices', ['state', 'hostname_lc'], unique=False)
    op.create_index(op.f('ix_devices_state_last_seen'), 'devices', ['state', 'last_seen'], unique=False)
    op.create_index(op.f('ix_devices_state_platform_last_seen'), 'devices', ['state', 'platform', 'last_seen'], unique=False)
    op.create_index(op.f('ix_devices_state_serial_lc'), 'devices', ['state', 'serial_lc'], unique=False)
    op.create_index(op.f('ix_devices_state_username_lc'), 'devices', ['state', 'username_lc'], unique=False)
    op.create_table('check_state',
    sa.Column('device_id', sa.String(length=36), nullable=False),
    sa.Column('rule_id', sa.String(length=200), nullable=False),
    sa.Column('check_id', sa.String(length=100), nullable=False),
    sa.Column('severity', sa.String(length=16), nullable=False),
    sa.Column('status', sa.String(length=16), nullable=False),
    sa.Column('since', sa.Double(), nullable=False),
    sa.Column('failing_since', sa.Double(), nullable=True),
    sa.Column('reason', sa.Text(), nullable=False),
    sa.Column('message', sa.Text(), nullable=False),
    sa.Column('evidence', sa.Text(), nullable=False),
    sa.Column('agent_status', sa.String(length=16), nullable=True),
    sa.Column('updated_at', sa.Double(), nullable=False),
    sa.Column('org_unit_id', sa.Integer(), nullable=False),
    sa.Column('active', sa.Boolean(), server_default=sa.true(), nullable=False),
    sa.ForeignKeyConstraint(['device_id'], ['devices.id'], name=op.f('fk_check_state_device_id_devices')),
    sa.PrimaryKeyConstraint('device_id', 'rule_id', name=op.f('pk_check_state'))
    )
    op.create_index(op.f('ix_check_state_active_org_unit_id_rule_id_status'), 'check_state', ['active', 'org_unit_id', 'rule_id', 'status'], unique=False)
    op.create_index(op.f('ix_check_state_active_rule_id_status_org_unit_id_device_id'), 'check_state', ['active', 'rule_id', 'status', 'org_unit_id', 'device_id'], unique=False)
    op.create_table('reports',
    sa.Column('id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), autoincrement=True, nullable=False),
    sa.Column('device_id', sa.String(length=36), nullable=False),
    sa.Column('seq', sa.BigInteger(), nullable=False),
    sa.Column('report_id', sa.String(length=64), nullable=False),
    sa.Column('created_at', sa.Double(), nullable=False),
    sa.Column('received_at', sa.Double(), nullable=False),
    sa.Column('compliance', sa.String(length=16), nullable=False),
    sa.Column('policy_ref', sa.String(length=300), nullable=False),
    sa.Column('payload', sa.Text(), nullable=False),
    sa.Column('signature', sa.String(length=100), nullable=False),
    sa.ForeignKeyConstraint(['device_id'], ['devices.id'], name=op.f('fk_reports_device_id_devices')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_reports')),
    sa.UniqueConstraint('device_id', 'seq', name=op.f('uq_reports_device_id_seq'))
    )
    op.create_index(op.f('ix_reports_received_at'), 'reports', ['received_at'], unique=False)
    op.create_table('transitions',
    sa.Column('id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), autoincrement=True, nullable=False),
    sa.Column('device_id', sa.String(length=36), nullable=False),
    sa.Column('rule_id', sa.String(length=200), nullable=False),
    sa.Column('check_id', sa.String(length=100), nullable=False),
    sa.Column('old_status', sa.String(length=16), nullable=True),
    sa.Column('new_status', sa.String(length=16), nullable=False),
    sa.Column('at', sa.Double(), nullable=False),
    sa.Column('recorded_at', sa.Double(), nullable=False),
    sa.Column('seq', sa.BigInteger(), nullable=False),
    sa.Column('reason', sa.Text(), nullable=False),
    sa.Column('org_unit_id', sa.Integer(), nullable=False),
    sa.ForeignKeyConstraint(['device_id'], ['devices.id'], name=op.f('fk_transitions_device_id_devices')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_transitions')),
    sa.UniqueConstraint('device_id', 'rule_id', 'seq', name=op.f('uq_transitions_device_id_rule_id_seq'))
    )
    op.create_index(op.f('ix_transitions_at'), 'transitions', ['at'], unique=False)
    op.create_index(op.f('ix_transitions_device_id_at'), 'transitions', ['device_id', 'at'], unique=False)
    op.create_index(op.f('ix_transitions_org_unit_id_at'), 'transitions', ['org_unit_id', 'at'], unique=False)


def downgrade() -> None:
    op.drop_table('transitions')
    op.drop_table('reports')
    op.drop_table('check_state')
    op.drop_table('devices')
    op.drop_table('api_token_org_units')
    op.drop_table('user_org_units')
    op.drop_table('enroll_tokens')
    op.drop_table('api_tokens')
    op.drop_table('users')
    op.drop_table('server_settings')
    op.drop_table('policies')
    op.drop_table('org_units')
    op.drop_table('daily_stats')
    op.drop_table('audit_log')
