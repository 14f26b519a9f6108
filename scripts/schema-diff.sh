#!/usr/bin/env bash
# Compares the schema REF's migrations build with the one this working tree's build: two scratch
# databases, each migrated to head by `tepat db upgrade` of its own checkout, then
# `pg_dump --schema-only --no-owner` of both, diffed (pg_dump's random \restrict key lines left
# out). The alembic_version row is data, so it is not in the dump. Exit 0 when identical.
#
# Usage: TEPAT_TEST_DATABASE_URL=postgresql://postgres@127.0.0.1:5432/postgres \
#          scripts/schema-diff.sh REF
set -euo pipefail
ref=${1:?usage: scripts/schema-diff.sh REF}
base=${TEPAT_TEST_DATABASE_URL:?set TEPAT_TEST_DATABASE_URL (a server where databases may be created)}
here=$(cd "$(dirname "$0")/.." && pwd)
python=${PYTHON:-$here/.venv/bin/python}
tmp=$(mktemp -d)
suffix=$$
dbs=("tepat_schema_ref_$suffix" "tepat_schema_tree_$suffix")
url() { echo "${base%/*}/$1"; }

cleanup() {
    for db in "${dbs[@]}"; do psql -q "$base" -c "DROP DATABASE IF EXISTS \"$db\" WITH (FORCE)"; done
    git -C "$here" worktree remove --force "$tmp/ref" 2>/dev/null || true
    rm -rf "$tmp"
}
trap cleanup EXIT

git -C "$here" worktree add --quiet --detach "$tmp/ref" "$ref"
for pair in "$tmp/ref:${dbs[0]}" "$here:${dbs[1]}"; do
    dir=${pair%%:*} db=${pair##*:}
    psql -q "$base" -c "CREATE DATABASE \"$db\""
    (cd "$dir" && TEPAT_DATABASE_URL=$(url "$db") "$python" -m app.cli db upgrade)
    pg_dump --schema-only --no-owner "$(url "$db")" | grep -v '^\\\(un\)\?restrict ' >"$tmp/$db.sql"
done
diff -u "$tmp/${dbs[0]}.sql" "$tmp/${dbs[1]}.sql" && echo "identical: $ref and the working tree"
