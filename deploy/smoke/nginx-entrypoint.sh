#!/bin/sh
# As the official image's 20-envsubst-on-templates.sh: only variables that are set are replaced,
# so nginx's own $variables survive.
set -eu
defined=$(env | sed -n 's/^\([A-Za-z_][A-Za-z0-9_]*\)=.*/${\1}/p' | tr '\n' ' ')
for template in /etc/nginx/templates/*.template; do
    [ -e "$template" ] || continue
    output="/etc/nginx/conf.d/$(basename "$template" .template)"
    envsubst "$defined" < "$template" > "$output"
done
exec "$@"
