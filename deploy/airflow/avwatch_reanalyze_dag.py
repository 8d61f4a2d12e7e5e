"""Airflow DAG: re-analyse the last day of every stream each night with the current detector config.

Copy this file to your Airflow dags/ folder; set the Airflow Variables (or edit the defaults below):
  avwatch_home    the avwatch checkout on the Spark client host (holds spark-submit.sh and .venv)
  avwatch_sink    the sink folder / URI of the Delta tables
  avwatch_master  the Spark master URL (spark://..., yarn, k8s://...)
  avwatch_config  the detector config file to apply (.toml)
SparkSubmitOperator (apache-airflow-providers-apache-spark) submits jobs/reanalyze.py with the jars and
the jobs package that ./spark-submit.sh would pass; the equivalent cron line is in docs/operations.md.
"""
from datetime import datetime, timedelta

from airflow import DAG
from airflow.models import Variable
from airflow.providers.apache.spark.operators.spark_submit import SparkSubmitOperator

HOME = Variable.get("avwatch_home", default_var="/opt/avwatch")
SINK = Variable.get("avwatch_sink", default_var="/data/avwatch")
MASTER = Variable.get("avwatch_master", default_var="local[*]")
CONFIG = Variable.get("avwatch_config", default_var=f"{HOME}/deploy/detectors.toml")

with DAG(
    dag_id="avwatch_reanalyze_daily",
    description="Re-run avwatch detectors over the last 24 h and replace their results atomically",
    schedule="30 2 * * *",
    start_date=datetime(2026, 1, 1),
    catchup=False,
    default_args={"retries": 1, "retry_delay": timedelta(minutes=10)},
    tags=["avwatch"],
) as dag:
    reanalyze = SparkSubmitOperator(
        task_id="reanalyze_last_24h",
        application=f"{HOME}/jobs/reanalyze.py",
        py_files=f"{HOME}/build/spark-submit/avwatch-0.1.0-py3-none-any.whl",
        jars="{{ var.value.get('avwatch_jars', '') }}",
        conn_id="spark_default",
        name="avwatch-reanalyze",
        conf={"spark.master": MASTER,
              "spark.sql.extensions": "io.delta.sql.DeltaSparkSessionExtension",
              "spark.sql.catalog.spark_catalog": "org.apache.spark.sql.delta.catalog.DeltaCatalog",
              "spark.pyspark.python": f"{HOME}/.venv/bin/python"},
        application_args=["--sink", SINK, "--from", "{{ data_interval_start.isoformat() }}",
                          "--to", "{{ data_interval_end.isoformat() }}", "--config", CONFIG],
    )
