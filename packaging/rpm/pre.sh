# %pre of @PACKAGE@: creates the postgres group and user if they are missing (uid/gid 26, the
# RPM convention, when free). An existing account is never changed.
if ! getent group postgres >/dev/null; then
    groupadd -r -g 26 postgres 2>/dev/null || groupadd -r postgres
fi
if ! getent passwd postgres >/dev/null; then
    useradd -r -u 26 -g postgres -d /var/lib/pgedge -M -s /bin/bash \
        -c "PostgreSQL administrator" postgres 2>/dev/null ||
        useradd -r -g postgres -d /var/lib/pgedge -M -s /bin/bash \
            -c "PostgreSQL administrator" postgres
fi
exit 0
