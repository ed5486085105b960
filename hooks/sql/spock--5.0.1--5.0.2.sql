-- spock 5.0.1 -> 5.0.2: subscriptions may skip schemas when their structure is copied.

ALTER TABLE spock.subscription ADD COLUMN sub_skip_schema text;

DROP FUNCTION spock.sub_create(name, text, text[], boolean, boolean, text[], interval, boolean, boolean);
CREATE FUNCTION spock.sub_create(subscription_name name, provider_dsn text,
    replication_sets text[] = '{default,default_insert_only,ddl_sql}', synchronize_structure boolean = false,
    synchronize_data boolean = false, forward_origins text[] = '{}', apply_delay interval DEFAULT '0',
    force_text_transfer boolean = false, enabled boolean = true, skip_schema text[] = '{}')
RETURNS oid STRICT VOLATILE LANGUAGE c AS 'MODULE_PATHNAME', 'spock_create_subscription';
