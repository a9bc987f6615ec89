"""A healthy DAG: nothing fails."""
from datetime import datetime

from airflow.sdk import DAG, task

with DAG(
    dag_id="healthy_heartbeat",
    description="Writes a heartbeat row",
    schedule=None,
    start_date=datetime(2026, 1, 1),
    catchup=False,
    tags=["monitoring"],
    default_args={"owner": "sre", "retries": 0},
):

    @task
    def beat():
        print("heartbeat ok")

    beat()
