#!/usr/bin/env bash
# The one command that starts CronBox locally: private PostgreSQL/NATS
# (scripts/provision.sh), release build, migrations, a dev workspace, serve.
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."
# shellcheck source=scripts/provision.sh
source scripts/provision.sh

export CRONBOX_LISTEN=${CRONBOX_LISTEN:-127.0.0.1:8080}
# The master key sealing signing secrets: made once, kept next to the data it unlocks.
if [[ -z ${CRONBOX_SECRETS_KEY:-} ]]; then
  key_file=$CRONBOX_HOME/secrets.key
  if [[ ! -s $key_file ]]; then
    (umask 077 && python3 -c 'import secrets; print(secrets.token_hex(32))' >"$key_file")
  fi
  CRONBOX_SECRETS_KEY=$(<"$key_file")
  export CRONBOX_SECRETS_KEY
fi
bin=target/release/cronbox

cargo build --release --bin cronbox
"$bin" migrate

# Create the dev workspace once and reuse it; recreate it if the database
# it was created in is not the one we use now.
ws_file=$CRONBOX_HOME/dev-workspace.json
saved_db=""
if [[ -f $ws_file ]]; then
  saved_db=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1])).get("database_url", ""))' "$ws_file")
fi
if [[ ! -f $ws_file || $saved_db != "$CRONBOX_DATABASE_URL" ]]; then
  created=$("$bin" workspace create --name "Local dev" --plan business --json)
  # Keep the CLI's JSON, plus the database it belongs to.
  python3 -c '
import json, sys
ws = json.loads(sys.argv[1])
assert ws.get("workspace_id") and ws.get("api_key"), "unexpected output: %r" % sys.argv[1]
ws["database_url"] = sys.argv[2]
with open(sys.argv[3] + ".tmp", "w") as f:
    json.dump(ws, f, indent=2)
' "$created" "$CRONBOX_DATABASE_URL" "$ws_file"
  mv -f "$ws_file.tmp" "$ws_file"
  chmod 600 "$ws_file" # holds an API key
fi
# The first login: a superuser, created once per database like the workspace.
admin_file=$CRONBOX_HOME/dev-admin.json
saved_db=""
if [[ -f $admin_file ]]; then
  saved_db=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1])).get("database_url", ""))' "$admin_file")
fi
if [[ ! -f $admin_file || $saved_db != "$CRONBOX_DATABASE_URL" ]]; then
  created=$("$bin" admin create-user --email admin@cronbox.local --name Administrator --superuser --json)
  python3 -c '
import json, sys
u = json.loads(sys.argv[1])
assert u.get("user_id") and u.get("password"), "unexpected output: %r" % sys.argv[1]
u["database_url"] = sys.argv[2]
with open(sys.argv[3] + ".tmp", "w") as f:
    json.dump(u, f, indent=2)
' "$created" "$CRONBOX_DATABASE_URL" "$admin_file"
  mv -f "$admin_file.tmp" "$admin_file"
  chmod 600 "$admin_file" # holds a password
fi
admin_email=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["email"])' "$admin_file")
admin_password=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["password"])' "$admin_file")

ws_id=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["workspace_id"])' "$ws_file")
api_key=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["api_key"])' "$ws_file")
url=http://$CRONBOX_LISTEN

cat <<INFO

CronBox dev server
  Open:         $url/   (the web app; log in with the login below)
  URL:          $url
  Workspace id: $ws_id
  API key:      $api_key
  (saved in $ws_file)
  Login:        $admin_email / $admin_password   (superuser; saved in $admin_file)

Log in (returns access and refresh tokens):
  curl -s -X POST $url/v1/auth/login -H 'Content-Type: application/json' -d '{"email":"$admin_email","password":"$admin_password"}'

Create a delayed call (fires in 60 s):
  curl -s -X POST $url/v1/workspaces/$ws_id/delayed -H "Authorization: Bearer $api_key" -H 'Content-Type: application/json' -d '{"url":"https://example.com/hook","method":"POST","delay_seconds":60,"body":"{\"hello\":\"world\"}"}'

Create a cron job (03:00 Moscow time, daily):
  curl -s -X POST $url/v1/workspaces/$ws_id/cron -H "Authorization: Bearer $api_key" -H 'Content-Type: application/json' -d '{"name":"nightly","url":"https://example.com/hook","schedule":"0 3 * * *","timezone":"Europe/Moscow"}'

INFO

exec "$bin" serve
