//! `spockctrl node …`: spock nodes and their interfaces, and per-node reports (versions, status,
//! spock settings) gathered from every configured node at once.

use crate::api::{ApiCmd, Call, Kind::*, On, p};

pub const COMMANDS: &[ApiCmd] = &[
    ApiCmd {
        name: "create",
        about: "Create the spock node of a database (spock.node_create)",
        call: Call::Spock("node_create"),
        params: &[
            p(
                "node_name",
                "node_name",
                "name",
                Pos,
                "name of the new node",
            ),
            p(
                "dsn",
                "dsn",
                "text",
                Opt,
                "how other nodes reach it (default: from the configuration)",
            ),
            p("location", "location", "text", Opt, "free-form location"),
            p("country", "country", "text", Opt, "country"),
            p("info", "info", "jsonb", Opt, "JSON document about the node"),
        ],
        on: On::One,
    },
    ApiCmd {
        name: "drop",
        about: "Drop a spock node (spock.node_drop)",
        call: Call::Spock("node_drop"),
        params: &[
            p("node_name", "node_name", "name", Pos, "node to drop"),
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
        name: "add-interface",
        about: "Add another DSN to a node (spock.node_add_interface)",
        call: Call::Spock("node_add_interface"),
        params: &[
            p("node_name", "node_name", "name", Pos, "node"),
            p(
                "interface_name",
                "interface_name",
                "name",
                Pos,
                "interface name",
            ),
            p(
                "dsn",
                "dsn",
                "text",
                Req,
                "connection string of the interface",
            ),
        ],
        on: On::One,
    },
    ApiCmd {
        name: "drop-interface",
        about: "Drop an interface of a node (spock.node_drop_interface)",
        call: Call::Spock("node_drop_interface"),
        params: &[
            p("node_name", "node_name", "name", Pos, "node"),
            p(
                "interface_name",
                "interface_name",
                "name",
                Pos,
                "interface name",
            ),
        ],
        on: On::One,
    },
    ApiCmd {
        name: "list",
        about: "The spock nodes each node knows (DSNs without passwords)",
        call: Call::Sql(
            "SELECT n.node_id::text, n.node_name::text, i.if_name::text AS interface, \
             spock.spock_mask_dsn(i.if_dsn) AS dsn, n.location, n.country, \
             (n.node_id = (SELECT node_id FROM spock.local_node)) AS local \
             FROM spock.node n LEFT JOIN spock.node_interface i ON i.if_nodeid = n.node_id \
             ORDER BY n.node_name, i.if_name",
        ),
        params: &[],
        on: On::Each,
    },
    ApiCmd {
        name: "spock-version",
        about: "Installed spock version",
        call: Call::Sql(
            "SELECT coalesce((SELECT extversion FROM pg_extension WHERE extname = 'spock'), \
             'not installed') AS spock_version",
        ),
        params: &[],
        on: On::Each,
    },
    ApiCmd {
        name: "pg-version",
        about: "PostgreSQL version",
        call: Call::Sql(
            "SELECT current_setting('server_version') AS pg_version, \
             current_setting('server_version_num') AS version_num, version()",
        ),
        params: &[],
        on: On::Each,
    },
    ApiCmd {
        name: "status",
        about: "Local spock node, its subscriptions and their states",
        call: Call::Sql(
            "SELECT (SELECT n.node_name::text FROM spock.local_node l \
                     JOIN spock.node n ON n.node_id = l.node_id) AS spock_node, \
                    s.subscription_name, s.status, s.provider_node \
               FROM (SELECT 1) one LEFT JOIN spock.sub_show_status() s ON true \
              ORDER BY s.subscription_name",
        ),
        params: &[],
        on: On::Each,
    },
    ApiCmd {
        name: "gucs",
        about: "spock settings and the server settings replication needs",
        call: Call::Sql(
            "SELECT name, setting FROM pg_settings \
              WHERE name LIKE 'spock.%' OR name IN ('wal_level', 'track_commit_timestamp', \
                    'max_replication_slots', 'max_wal_senders', 'max_worker_processes', \
                    'shared_preload_libraries') ORDER BY name",
        ),
        params: &[],
        on: On::Each,
    },
];
