//! `spockctrl repset …`: replication sets and their tables, sequences and partitions.

use crate::api::{ApiCmd, Call, Kind::*, On, Param, p};

const FLAGS: &[Param] = &[
    p("set_name", "set_name", "name", Pos, "replication set"),
    p(
        "replicate_insert",
        "replicate_insert",
        "boolean",
        Opt,
        "replicate INSERTs",
    ),
    p(
        "replicate_update",
        "replicate_update",
        "boolean",
        Opt,
        "replicate UPDATEs",
    ),
    p(
        "replicate_delete",
        "replicate_delete",
        "boolean",
        Opt,
        "replicate DELETEs",
    ),
    p(
        "replicate_truncate",
        "replicate_truncate",
        "boolean",
        Opt,
        "replicate TRUNCATEs",
    ),
];

pub const COMMANDS: &[ApiCmd] = &[
    ApiCmd {
        name: "create",
        about: "Create a replication set (spock.repset_create)",
        call: Call::Spock("repset_create"),
        params: FLAGS,
        on: On::One,
    },
    ApiCmd {
        name: "alter",
        about: "Change what a replication set replicates (spock.repset_alter)",
        call: Call::Spock("repset_alter"),
        params: FLAGS,
        on: On::One,
    },
    ApiCmd {
        name: "drop",
        about: "Drop a replication set (spock.repset_drop)",
        call: Call::Spock("repset_drop"),
        params: &[
            p("set_name", "set_name", "name", Pos, "replication set"),
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
        name: "add-table",
        about: "Add a table to a set (spock.repset_add_table)",
        call: Call::Spock("repset_add_table"),
        params: &[
            p("set_name", "set_name", "name", Pos, "replication set"),
            p(
                "relation",
                "relation",
                "regclass",
                Pos,
                "table (schema.table)",
            ),
            p(
                "synchronize_data",
                "synchronize_data",
                "boolean",
                Opt,
                "copy the data to subscribers",
            ),
            p(
                "columns",
                "columns",
                "text[]",
                Opt,
                "replicate only these columns (a,b)",
            ),
            p(
                "row_filter",
                "row_filter",
                "text",
                Opt,
                "replicate only rows matching this expression",
            ),
            p(
                "include_partitions",
                "include_partitions",
                "boolean",
                Opt,
                "add the partitions too",
            ),
        ],
        on: On::One,
    },
    ApiCmd {
        name: "remove-table",
        about: "Remove a table from a set (spock.repset_remove_table)",
        call: Call::Spock("repset_remove_table"),
        params: &[
            p("set_name", "set_name", "name", Pos, "replication set"),
            p(
                "relation",
                "relation",
                "regclass",
                Pos,
                "table (schema.table)",
            ),
            p(
                "include_partitions",
                "include_partitions",
                "boolean",
                Opt,
                "remove the partitions too",
            ),
        ],
        on: On::One,
    },
    ApiCmd {
        name: "add-all-tables",
        about: "Add every table of schemas to a set (spock.repset_add_all_tables)",
        call: Call::Spock("repset_add_all_tables"),
        params: &[
            p("set_name", "set_name", "name", Pos, "replication set"),
            p(
                "schema_names",
                "schema_names",
                "text[]",
                Pos,
                "schemas (a,b)",
            ),
            p(
                "synchronize_data",
                "synchronize_data",
                "boolean",
                Opt,
                "copy the data to subscribers",
            ),
        ],
        on: On::One,
    },
    ApiCmd {
        name: "add-seq",
        about: "Add a sequence to a set (spock.repset_add_seq)",
        call: Call::Spock("repset_add_seq"),
        params: &[
            p("set_name", "set_name", "name", Pos, "replication set"),
            p("relation", "relation", "regclass", Pos, "sequence"),
            p(
                "synchronize_data",
                "synchronize_data",
                "boolean",
                Opt,
                "push its value now",
            ),
        ],
        on: On::One,
    },
    ApiCmd {
        name: "add-all-sequences",
        about: "Add every sequence of schemas to a set (spock.repset_add_all_seqs)",
        call: Call::Spock("repset_add_all_seqs"),
        params: &[
            p("set_name", "set_name", "name", Pos, "replication set"),
            p(
                "schema_names",
                "schema_names",
                "text[]",
                Pos,
                "schemas (a,b)",
            ),
            p(
                "synchronize_data",
                "synchronize_data",
                "boolean",
                Opt,
                "push their values now",
            ),
        ],
        on: On::One,
    },
    ApiCmd {
        name: "add-partition",
        about: "Add partitions of a partitioned member table (spock.repset_add_partition)",
        call: Call::Spock("repset_add_partition"),
        params: &[
            p("parent", "parent", "regclass", Pos, "partitioned table"),
            p(
                "partition",
                "partition",
                "regclass",
                PosOpt,
                "one partition (default: all)",
            ),
            p("row_filter", "row_filter", "text", Opt, "row filter"),
        ],
        on: On::One,
    },
    ApiCmd {
        name: "remove-partition",
        about: "Remove partitions from the sets of their parent (spock.repset_remove_partition)",
        call: Call::Spock("repset_remove_partition"),
        params: &[
            p("parent", "parent", "regclass", Pos, "partitioned table"),
            p(
                "partition",
                "partition",
                "regclass",
                PosOpt,
                "one partition (default: all)",
            ),
        ],
        on: On::One,
    },
    ApiCmd {
        name: "list",
        about: "Replication sets of each node",
        call: Call::Sql(
            "SELECT s.set_name::text, s.replicate_insert, s.replicate_update, \
                    s.replicate_delete, s.replicate_truncate \
               FROM spock.replication_set s JOIN spock.local_node l ON l.node_id = s.set_nodeid \
              ORDER BY 1",
        ),
        params: &[],
        on: On::Each,
    },
    ApiCmd {
        name: "list-tables",
        about: "Tables and the sets they belong to",
        call: Call::Sql(
            "SELECT set_name::text, nspname::text AS schema, relname::text AS table \
               FROM spock.tables WHERE set_name IS NOT NULL \
                AND ($1::text IS NULL OR set_name = $1::text) ORDER BY 1, 2, 3",
        ),
        params: &[p("set_name", "set_name", "text", PosOpt, "only this set")],
        on: On::Each,
    },
];
