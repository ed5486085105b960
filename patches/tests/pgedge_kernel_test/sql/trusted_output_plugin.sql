--
-- Trusted output plugins of shared_preload_libraries (patch 0005)
--
SHOW pgedge.kernel_api;
-- The tests' configuration preloads pgedge_kernel_test, which trusts
-- test_decoding; the list below names neither it nor pgedge_kernel_test.
SET output_plugin_libraries = 'pgoutput';
SELECT 'ok' FROM pg_create_logical_replication_slot('trusted_slot', 'test_decoding');
SELECT plugin FROM pg_replication_slots WHERE slot_name = 'trusted_slot';
SELECT pg_drop_replication_slot('trusted_slot');
-- Any other library stays refused unless listed.
\set VERBOSITY sqlstate
SELECT 'ok' FROM pg_create_logical_replication_slot('untrusted_slot', 'pgedge_kernel_test');
\set VERBOSITY default
SELECT 'ok' FROM pg_create_logical_replication_slot('untrusted_slot', 'pgedge_kernel_test');
-- Only while shared_preload_libraries are being loaded.
SELECT pgedge_test_register_output_plugin('pgedge_kernel_test');
SELECT pgedge_test_register_output_plugin('$libdir/pgedge_kernel_test');
SELECT pgedge_test_register_output_plugin('');
SELECT count(*) FROM pg_replication_slots WHERE slot_name = 'untrusted_slot';
RESET output_plugin_libraries;
