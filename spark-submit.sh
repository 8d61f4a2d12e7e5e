#!/usr/bin/env bash
# Run an avwatch Spark job with spark-submit, locally or on a cluster.
#
#   ./spark-submit.sh stream|reanalyze [--master URL] [--deploy-mode client|cluster] [spark options] [-- job args]
#
# It builds the jobs' Python package (a wheel from setup.py) for --py-files, passes the cached Kafka and
# Delta jars with --jars (resolved once into the jar cache: `avwatch jars`), and defaults to local[*].
# The same command works against a standalone (spark://), YARN (yarn) or Kubernetes (k8s://) master.
# Executors need avwatch's Python dependencies (requirements.txt) in the Python they run: set
# spark.pyspark.python (default here: this checkout's .venv, which suits local and single-host clusters).
#
# Examples:
#   ./spark-submit.sh stream -- --sink /data/avwatch --bootstrap kafka:9092
#   ./spark-submit.sh stream --master spark://10.0.0.5:7077 --executor-cores 2 -- --sink s3a://bucket/avwatch
#   ./spark-submit.sh reanalyze -- --sink /data/avwatch --since 24h --detectors black --config new.toml
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
usage() { sed -n '2,17p' "$0" | sed 's/^# \{0,1\}//'; }

job="${1:-}"
case "$job" in
  stream|reanalyze) shift ;;
  -h|--help|"") usage; exit 0 ;;
  *) echo "spark-submit.sh: unknown job '$job': choose stream or reanalyze" >&2; usage >&2; exit 2 ;;
esac

PY="${AVWATCH_PYTHON:-$here/.venv/bin/python}"
if [ ! -x "$PY" ]; then
  echo "spark-submit.sh: no Python at $PY: run 'make install' first (or set AVWATCH_PYTHON)" >&2
  exit 2
fi
export AVWATCH_CACHE="${AVWATCH_CACHE:-$here/.cache}"

master="local[*]"
spark_opts=()
job_args=()
have_python_conf=0
while [ $# -gt 0 ]; do
  case "$1" in
    --) shift; job_args=("$@"); break ;;
    --master) master="$2"; shift 2 ;;
    --master=*) master="${1#--master=}"; shift ;;
    --conf) [[ "$2" == spark.pyspark.python=* ]] && have_python_conf=1; spark_opts+=("$1" "$2"); shift 2 ;;
    *) spark_opts+=("$1"); shift ;;
  esac
done

# The jobs' package: a wheel built from setup.py (pure Python; Python imports it from --py-files).
dist="$here/build/spark-submit"
rm -rf "$dist" && mkdir -p "$dist"
"$PY" -m pip wheel --quiet --no-deps --no-build-isolation --wheel-dir "$dist" "$here" >/dev/null
wheel="$(ls "$dist"/avwatch-*.whl)"
jars="$("$PY" -m cli jars --set spark --csv)"
spark_submit="$("$PY" -c 'import os, pyspark; print(os.path.join(os.path.dirname(pyspark.__file__), "bin", "spark-submit"))')"

# the JVM options the jobs' own launcher uses (jobs/spark_session.py JVM_OPTIONS); a --conf of the same key
# given to this script comes later on the command line and wins
jvm_options="$(cd "$here" && "$PY" -c 'from jobs.spark_session import JVM_OPTIONS; print(JVM_OPTIONS)')"

python_conf=()
if [ "$have_python_conf" -eq 0 ]; then
  python_conf=(--conf "spark.pyspark.python=$PY" --conf "spark.pyspark.driver.python=$PY")
fi

exec "$spark_submit" --master "$master" --name "avwatch-$job" \
  --jars "$jars" --py-files "$wheel" \
  --conf spark.sql.extensions=io.delta.sql.DeltaSparkSessionExtension \
  --conf spark.sql.catalog.spark_catalog=org.apache.spark.sql.delta.catalog.DeltaCatalog \
  --conf "spark.driver.extraJavaOptions=$jvm_options" --conf "spark.executor.extraJavaOptions=$jvm_options" \
  "${python_conf[@]}" "${spark_opts[@]}" "$here/jobs/$job.py" "${job_args[@]}"
