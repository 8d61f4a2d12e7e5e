"""The foundation's smoke path through the real parts: kafka-python -> Kafka -> Spark -> Delta -> delta-rs."""
import pytest

from jobs.smoke import N_RECORDS, run_smoke_path

pytestmark = [pytest.mark.spark, pytest.mark.kafka]


def test_records_round_trip_through_kafka_spark_and_delta(spark, broker, tmp_path):
    summary = run_smoke_path(spark, broker.bootstrap, tmp_path)
    assert summary["records"] == N_RECORDS
