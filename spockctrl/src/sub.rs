//! `spockctrl sub …`: subscriptions. A provider DSN may be given as a configured node's name.

use crate::api::{ApiCmd, Call, Kind::*, On, p};

pub const COMMANDS: &[ApiCmd] = &[
    ApiCmd {
        name: "create",
        about: "Subscribe this node to a provider (spock.sub_create)",
        call: Call::Spock("sub_create"),
        params: &[
            p(
                "sub_name",
                "subscription_name",
                "name",
                Pos,
                "subscription name",
            ),
            p(
                "provider_dsn",
                "provider_dsn",
                "text",
                Pos,
                "provider DSN, or a configured node's name",
            ),
            p(
                "replication_sets",
                "replication_sets",
                "text[]",
                Opt,
                "sets (a,b)",
            ),
            p(
                "synchronize_structure",
                "synchronize_structure",
                "boolean",
                Opt,
                "copy the schema first",
            ),
            p(
                "synchronize_data",
                "synchronize_data",
                "boolean",
                Opt,
                "copy the data first",
            ),
            p(
                "forward_origins",
                "forward_origins",
                "text[]",
                Opt,
                "origins to forward ({} or {all})",
            ),
            p(
                "apply_delay",
                "apply_delay",
                "interval",
                Opt,
                "delay applying by this interval",
            ),
            p(
                "force_text_transfer",
                "force_text_transfer",
                "boolean",
                Opt,
                "send values as text",
            ),
            p(
                "enabled",
                "enabled",
                "boolean",
                Opt,
                "start replicating now",
            ),
            p(
                "skip_schema",
                "skip_schema",
                "text[]",
                Opt,
                "schemas the structure copy leaves out",
            ),
        ],
        on: On::One,
    },
    ApiCmd {
        name: "drop",
        about: "Drop a subscription (spock.sub_drop)",
        call: Call::Spock("sub_drop"),
        params: &[
            p("sub_name", "subscription_name", "name", Pos, "subscription"),
            p(
                "ifexists",
                "ifexists",
                "boolean",
                Switch,
                "no error when it does not exist",
            ),
        ],
        on: On::One,
    },
    ApiCmd {
        name: "enable",
        about: "Enable a subscription (spock.sub_enable)",
        call: Call::Spock("sub_enable"),
        params: &[
            p("sub_name", "subscription_name", "name", Pos, "subscription"),
            p(
                "immediate",
                "immediate",
                "boolean",
                Opt,
                "now rather than at commit",
            ),
        ],
        on: On::One,
    },
    ApiCmd {
        name: "disable",
        about: "Disable a subscription (spock.sub_disable)",
        call: Call::Spock("sub_disable"),
        params: &[
            p("sub_name", "subscription_name", "name", Pos, "subscription"),
            p(
                "immediate",
                "immediate",
                "boolean",
                Opt,
                "now rather than at commit",
            ),
        ],
        on: On::One,
    },
    ApiCmd {
        name: "list",
        about: "Subscriptions of each node",
        call: Call::Sql(
            "SELECT subscription_name, status, provider_node, slot_name, \
                    array_to_string(replication_sets, ',') AS replication_sets \
               FROM spock.sub_show_status() ORDER BY 1",
        ),
        params: &[],
        on: On::Each,
    },
    ApiCmd {
        name: "show-status",
        about: "Status of a subscription, or of all (spock.sub_show_status)",
        call: Call::Sql(
            "SELECT subscription_name, status, provider_node, spock.spock_mask_dsn(provider_dsn) \
                    AS provider_dsn, slot_name, array_to_string(replication_sets, ',') AS \
                    replication_sets, array_to_string(forward_origins, ',') AS forward_origins \
               FROM spock.sub_show_status($1::name) ORDER BY 1",
        ),
        params: &[p(
            "sub_name",
            "subscription_name",
            "name",
            PosOpt,
            "subscription (default: all)",
        )],
        on: On::Each,
    },
    ApiCmd {
        name: "show-table",
        about: "Sync state of one table in a subscription (spock.sub_show_table)",
        call: Call::Spock("sub_show_table"),
        params: &[
            p("sub_name", "subscription_name", "name", Pos, "subscription"),
            p("relation", "relation", "regclass", Pos, "table"),
        ],
        on: On::One,
    },
    ApiCmd {
        name: "resync-table",
        about: "Copy one table again (spock.sub_resync_table)",
        call: Call::Spock("sub_resync_table"),
        params: &[
            p("sub_name", "subscription_name", "name", Pos, "subscription"),
            p("relation", "relation", "regclass", Pos, "table"),
            p(
                "truncate",
                "truncate",
                "boolean",
                Opt,
                "truncate it first (default true)",
            ),
        ],
        on: On::One,
    },
    ApiCmd {
        name: "add-repset",
        about: "Subscribe to one more set (spock.sub_add_repset)",
        call: Call::Spock("sub_add_repset"),
        params: &[
            p("sub_name", "subscription_name", "name", Pos, "subscription"),
            p("replication_set", "replication_set", "name", Pos, "set"),
        ],
        on: On::One,
    },
    ApiCmd {
        name: "remove-repset",
        about: "Stop subscribing to a set (spock.sub_remove_repset)",
        call: Call::Spock("sub_remove_repset"),
        params: &[
            p("sub_name", "subscription_name", "name", Pos, "subscription"),
            p("replication_set", "replication_set", "name", Pos, "set"),
        ],
        on: On::One,
    },
    ApiCmd {
        name: "wait-for-sync",
        about: "Wait until a subscription's initial copy is done (spock.sub_wait_for_sync)",
        call: Call::Spock("sub_wait_for_sync"),
        params: &[p(
            "sub_name",
            "subscription_name",
            "name",
            Pos,
            "subscription",
        )],
        on: On::One,
    },
];
