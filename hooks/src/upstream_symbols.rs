//! Upstream Spock 5.0.5's C symbol names, exported as version-1 functions so a database whose
//! spock functions were declared by upstream's scripts (`AS 'MODULE_PATHNAME', '<symbol>'`)
//! resolves every one of them here. Five answer directly; the rest hand the call to this
//! build's definition of the same SQL function (see [`crate::upgrade::forward`]).

use pgrx::pg_sys;

/// Defines each symbol with its `pg_finfo_` record and lists them in [`SYMBOLS`].
macro_rules! upstream_symbols {
    ($($symbol:ident, $finfo:ident => $how:ident;)*) => {
        /// Every symbol a database created by upstream's scripts may name.
        pub const SYMBOLS: &[&str] = &[$(stringify!($symbol)),*];
        $(
            #[unsafe(no_mangle)]
            pub extern "C" fn $finfo() -> &'static pg_sys::Pg_finfo_record {
                const V1: pg_sys::Pg_finfo_record = pg_sys::Pg_finfo_record { api_version: 1 };
                &V1
            }

            /// # Safety
            /// Called by the function manager with a valid `fcinfo`.
            #[pgrx::pg_guard]
            #[unsafe(no_mangle)]
            pub unsafe extern "C-unwind" fn $symbol(fcinfo: pg_sys::FunctionCallInfo) -> pg_sys::Datum {
                // SAFETY: the function manager's call frame, passed on unchanged.
                unsafe { crate::upgrade::$how(fcinfo) }
            }
        )*
    };
}

upstream_symbols! {
    delta_apply_float4, pg_finfo_delta_apply_float4 => forward;
    delta_apply_float8, pg_finfo_delta_apply_float8 => forward;
    delta_apply_int2, pg_finfo_delta_apply_int2 => forward;
    delta_apply_int4, pg_finfo_delta_apply_int4 => forward;
    delta_apply_int8, pg_finfo_delta_apply_int8 => forward;
    delta_apply_money, pg_finfo_delta_apply_money => forward;
    delta_apply_numeric, pg_finfo_delta_apply_numeric => forward;
    get_apply_worker_status, pg_finfo_get_apply_worker_status => forward;
    get_channel_stats, pg_finfo_get_channel_stats => forward;
    reset_channel_stats, pg_finfo_reset_channel_stats => forward;
    spock_alter_node_add_interface, pg_finfo_spock_alter_node_add_interface => forward;
    spock_alter_node_drop_interface, pg_finfo_spock_alter_node_drop_interface => forward;
    spock_alter_replication_set, pg_finfo_spock_alter_replication_set => forward;
    spock_alter_subscription_add_replication_set, pg_finfo_spock_alter_subscription_add_replication_set => forward;
    spock_alter_subscription_disable, pg_finfo_spock_alter_subscription_disable => forward;
    spock_alter_subscription_enable, pg_finfo_spock_alter_subscription_enable => forward;
    spock_alter_subscription_interface, pg_finfo_spock_alter_subscription_interface => forward;
    spock_alter_subscription_remove_replication_set, pg_finfo_spock_alter_subscription_remove_replication_set => forward;
    spock_alter_subscription_resynchronize_table, pg_finfo_spock_alter_subscription_resynchronize_table => forward;
    spock_alter_subscription_skip_lsn, pg_finfo_spock_alter_subscription_skip_lsn => forward;
    spock_alter_subscription_synchronize, pg_finfo_spock_alter_subscription_synchronize => forward;
    spock_create_node, pg_finfo_spock_create_node => forward;
    spock_create_replication_set, pg_finfo_spock_create_replication_set => forward;
    spock_create_subscription, pg_finfo_spock_create_subscription => forward;
    spock_create_sync_event, pg_finfo_spock_create_sync_event => forward;
    spock_drop_node, pg_finfo_spock_drop_node => forward;
    spock_drop_replication_set, pg_finfo_spock_drop_replication_set => forward;
    spock_drop_subscription, pg_finfo_spock_drop_subscription => forward;
    spock_gen_slot_name, pg_finfo_spock_gen_slot_name => gen_slot_name;
    spock_get_lsn_from_commit_ts, pg_finfo_spock_get_lsn_from_commit_ts => forward;
    spock_max_proto_version, pg_finfo_spock_max_proto_version => max_proto_version;
    spock_min_proto_version, pg_finfo_spock_min_proto_version => min_proto_version;
    spock_node_info, pg_finfo_spock_node_info => forward;
    spock_repair_mode, pg_finfo_spock_repair_mode => forward;
    spock_replicate_ddl_command, pg_finfo_spock_replicate_ddl_command => forward;
    spock_replication_set_add_all_sequences, pg_finfo_spock_replication_set_add_all_sequences => forward;
    spock_replication_set_add_all_tables, pg_finfo_spock_replication_set_add_all_tables => forward;
    spock_replication_set_add_partition, pg_finfo_spock_replication_set_add_partition => forward;
    spock_replication_set_add_sequence, pg_finfo_spock_replication_set_add_sequence => forward;
    spock_replication_set_add_table, pg_finfo_spock_replication_set_add_table => forward;
    spock_replication_set_remove_partition, pg_finfo_spock_replication_set_remove_partition => forward;
    spock_replication_set_remove_sequence, pg_finfo_spock_replication_set_remove_sequence => forward;
    spock_replication_set_remove_table, pg_finfo_spock_replication_set_remove_table => forward;
    spock_show_repset_table_info, pg_finfo_spock_show_repset_table_info => forward;
    spock_show_subscription_status, pg_finfo_spock_show_subscription_status => forward;
    spock_show_subscription_table, pg_finfo_spock_show_subscription_table => forward;
    spock_synchronize_sequence, pg_finfo_spock_synchronize_sequence => forward;
    spock_table_data_filtered, pg_finfo_spock_table_data_filtered => forward;
    spock_version, pg_finfo_spock_version => version;
    spock_version_num, pg_finfo_spock_version_num => version_num;
    spock_wait_for_subscription_sync_complete, pg_finfo_spock_wait_for_subscription_sync_complete => forward;
    spock_wait_for_table_sync_complete, pg_finfo_spock_wait_for_table_sync_complete => forward;
    spock_wait_slot_confirm_lsn, pg_finfo_spock_wait_slot_confirm_lsn => forward;
    spock_xact_commit_timestamp_origin, pg_finfo_spock_xact_commit_timestamp_origin => forward;
    spockro_terminate_active_transactions, pg_finfo_spockro_terminate_active_transactions => forward;
}
