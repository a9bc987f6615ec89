"""Syncs partitions from an upstream that hangs; the task's execution_timeout kills it."""
import time
from datetime import datetime, timedelta

from airflow.sdk import DAG, task

with DAG(
    dag_id="slow_partition_sync",
    description="Copies new partitions from the upstream lake",
    schedule=None,
    start_date=datetime(2026, 1, 1),
    catchup=False,
    tags=["lake"],
    default_args={"owner": "platform", "retries": 0},
):

    @task(execution_timeout=timedelta(seconds=3))
    def sync_partitions():
        print("waiting for the upstream lake to list partitions")
        time.sleep(120)

    sync_partitions()
