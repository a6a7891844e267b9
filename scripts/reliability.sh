#!/usr/bin/env bash
# make reliability: run the end-to-end reliability suite (e2e/, the real edge
# and api binaries under load and faults) and write its figures into
# docs/reliability.md, between the lines <!-- e2e:begin --> and <!-- e2e:end -->.
# The document is only rewritten when every scenario passed.
set -euo pipefail
cd "$(dirname "$0")/.."
GO="${GO:-go}"
doc=docs/reliability.md

grep -q '^<!-- e2e:begin -->$' "$doc" && grep -q '^<!-- e2e:end -->$' "$doc" || {
  echo "reliability: $doc lacks the <!-- e2e:begin --> / <!-- e2e:end --> lines" >&2
  exit 1
}

report=$(mktemp)
log=$(mktemp)
table=$(mktemp)
trap 'rm -f "$report" "$log" "$table"' EXIT

echo "running the e2e reliability suite (a few minutes; full log: go test -v ./e2e/)"
start=$(date +%s)
set +e
FLOWEDGE_E2E_REPORT="$report" "$GO" test -count=1 -timeout 20m -run '^TestReliability$' -v ./e2e/ 2>&1 |
  tee "$log" | grep --line-buffered -E 'scenario=|^ *--- |^(ok|FAIL|PASS)'
status=${PIPESTATUS[0]}
set -e
took=$(( $(date +%s) - start ))
if [ "$status" -ne 0 ]; then
  echo "reliability: the suite failed (exit $status); $doc not updated. Last lines:" >&2
  tail -n 60 "$log" >&2
  exit "$status"
fi
if [ ! -s "$report" ]; then
  echo "reliability: the suite passed but wrote no figures (was it skipped?); $doc not updated" >&2
  exit 1
fi

commit=$(git rev-parse --short HEAD 2>/dev/null || echo unknown)
if [ -n "$(git status --porcelain 2>/dev/null)" ]; then commit="$commit+changes"; fi
cores=$(getconf _NPROCESSORS_ONLN 2>/dev/null || echo "?")
{
  echo "Measured by \`make reliability\` on $(date -u +%Y-%m-%d) at commit \`$commit\`"
  echo "($(uname -s)/$(uname -m), $cores cores; whole suite including the build: ${took} s)."
  echo "Every row passed its assertions; a broken guarantee fails \`make test\`."
  echo
  echo "| scenario | sent | acknowledged | delivered | duplicates | lost | max reorder | misplaced | also measured |"
  echo "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- |"
  awk '{
    delete kv; extra = ""
    for (i = 1; i <= NF; i++) {
      split($i, p, "="); k = p[1]; v = substr($i, length(k) + 2)
      if (k ~ /^(scenario|sent|acknowledged|delivered|duplicates|lost|max_reorder|misplaced)$/) kv[k] = v
      else extra = extra (extra == "" ? "" : ", ") k "=" v
    }
    printf "| %s | %s | %s | %s | %s | %s | %s | %s | %s |\n", kv["scenario"], kv["sent"], kv["acknowledged"],
      kv["delivered"], kv["duplicates"], kv["lost"], kv["max_reorder"], kv["misplaced"], extra
  }' "$report"
} >"$table"

awk -v table="$table" '
  /^<!-- e2e:begin -->$/ { print; while ((getline line < table) > 0) print line; skip = 1; next }
  /^<!-- e2e:end -->$/   { skip = 0 }
  !skip { print }
' "$doc" >"$doc.tmp"
mv "$doc.tmp" "$doc"
echo "figures of $(wc -l <"$report" | tr -d ' ') scenarios written to $doc (suite: ${took} s)"
