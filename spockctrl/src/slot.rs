//! `spockctrl slot …`: logical replication slots (the add-node workflows create them ahead of a
//! subscription).

use crate::api::{ApiCmd, Call, Kind::*, On, Param};

pub const COMMANDS: &[ApiCmd] = &[
    ApiCmd {
        name: "create",
        about: "Create a logical replication slot",
        call: Call::Sql(
            "SELECT slot_name::text, lsn::text FROM pg_create_logical_replication_slot($1, $2)",
        ),
        params: &[
            Param {
                flag: "slot",
                sql: "slot_name",
                cast: "name",
                kind: Pos,
                default: None,
                help: "slot name",
            },
            Param {
                flag: "plugin",
                sql: "plugin",
                cast: "name",
                kind: Opt,
                default: Some("spock_output"),
                help: "output plugin (default spock_output)",
            },
        ],
        on: On::One,
    },
    ApiCmd {
        name: "drop",
        about: "Drop a replication slot",
        call: Call::Sql("SELECT pg_drop_replication_slot($1) IS NULL AS dropped"),
        params: &[Param {
            flag: "slot",
            sql: "slot_name",
            cast: "name",
            kind: Pos,
            default: None,
            help: "slot name",
        }],
        on: On::One,
    },
];
