#!/bin/sh
# Runs before nats-server (Kubernetes: deploy/k8s/20-nats.yaml; compose: the nats services'
# entrypoint): checks that every credential accounts.conf reads from the environment is in the form
# it needs, then runs the command given (nats-server ...). When one is not, it refuses to start with
# one line per variable: what is wrong and how to fix it. It never prints a value.
#
#   sh check-credentials.sh                      check only: exit 0 (fine) or 1 (names the problems)
#   sh check-credentials.sh nats-server -c FILE  check, then exec nats-server
#
# Why: nats-server parses an environment value as configuration. A password there (-abc, 123, true,
# "a b") stops it with a parse error that names neither the cause nor the fix, or (x}, "x", $OTHER)
# silently becomes another password. A $2a$ bcrypt hash and a public nkey are read back unchanged.
set -u

problems=0
refuse() {
  echo "check-credentials: $1 $2" >&2
  echo "  fix: $3" >&2
  problems=$((problems + 1))
}

howto='put the $2a$ bcrypt hash of the password there (switchboard nats-hash < password-file, or: nats server passwd)'

for user in ORCHESTRATOR INGEST OPERATOR; do
  name="SWITCHBOARD_NATS_${user}_PASSWORD_HASH"
  eval "set_=\${$name+x} value=\${$name-}"
  if [ -z "$set_" ] || [ -z "$value" ]; then
    refuse "$name" "is not set (the bcrypt hash of the $(echo "$user" | tr 'A-Z' 'a-z') user's password)" "$howto"
    continue
  fi
  # 60 characters in all, so the one line grep sees is the whole value.
  if [ "${#value}" -eq 60 ] && printf '%s' "$value" | grep -Eq '^\$2a\$(0[4-9]|[12][0-9]|3[01])\$[./A-Za-z0-9]{53}$'; then
    continue
  fi
  case "$value" in
    '$2b$'* | '$2y$'*)
      refuse "$name" "is a bcrypt hash written \$2b\$ or \$2y\$: nats-server reads only \$2a\$ hashes from its environment" \
        'write the same hash with $2a$ in place of its first four characters' ;;
    '$2'*)
      refuse "$name" "looks like a bcrypt hash but is not one (\$2a\$, a two-digit cost, \$, 53 characters)" "$howto" ;;
    *)
      refuse "$name" "is not a bcrypt hash: nats-server would read a password there as configuration (and may stop or change it)" "$howto" ;;
  esac
done

# One nkey per worker pool: every SWITCHBOARD_NATS_WORKER_<POOL>_NKEY that accounts.conf (next to
# this script, or SWITCHBOARD_NATS_ACCOUNTS_CONF) names.
accounts="${SWITCHBOARD_NATS_ACCOUNTS_CONF:-$(dirname "$0")/accounts.conf}"
if [ -r "$accounts" ]; then
  pools=$(grep -o '\$SWITCHBOARD_NATS_WORKER_[A-Z0-9_]*_NKEY' "$accounts" | tr -d '$' | sort -u)
else
  pools=""
  refuse "$accounts" "cannot be read (the pools' nkey variables are named there)" \
    'put accounts.conf next to this script, or set SWITCHBOARD_NATS_ACCOUNTS_CONF to it'
fi
for name in $pools; do
  eval "set_=\${$name+x} value=\${$name-}"
  if [ -z "$set_" ] || [ -z "$value" ]; then
    refuse "$name" "is not set (the public nkey of that pool's workers' seed)" 'nk -inkey pool.nk -pubout'
  elif ! { [ "${#value}" -eq 56 ] && printf '%s' "$value" | grep -Eq '^U[A-Z2-7]{55}$'; }; then
    case "$value" in
      SU*) refuse "$name" "holds a seed (the secret), not the public key" 'put the public key there: nk -inkey pool.nk -pubout' ;;
      *) refuse "$name" "is not a public user nkey (U and 55 characters A-Z, 2-7)" 'nk -inkey pool.nk -pubout' ;;
    esac
  fi
done

if [ "$problems" -gt 0 ]; then
  echo "check-credentials: $problems credential(s) in the environment cannot work; nats-server not started (see deploy/nats/accounts.conf)" >&2
  exit 1
fi
[ "$#" -eq 0 ] && exit 0
exec "$@"
