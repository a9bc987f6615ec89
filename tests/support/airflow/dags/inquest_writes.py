"""A DAG that tests pause, trigger and clear, apart from the failures other tests read."""
from datetime import datetime

from airflow.sdk import DAG, task

with DAG(
    dag_id="inquest_writes",
    schedule=None,
    start_date=datetime(2026, 1, 1),
    catchup=False,
    tags=["inquest-test"],
    default_args={"owner": "sre", "retries": 0},
):

    @task
    def quick():
        print("done")

    quick()
