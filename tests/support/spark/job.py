"""The one PySpark job the Spark tests investigate, in three variants.

    python job.py <events-dir> <variant>

`ok` parses and totals clean order records; `bad_record` gets one unparseable record,
so the Python UDF raises and the job fails with the traceback in the stage's failure
reason; `oom` runs with a small heap and gathers every record into one group, so a task
dies with java.lang.OutOfMemoryError. Each writes its event log into <events-dir>.
"""

import sys

from pyspark.sql import SparkSession, functions as F
from pyspark.sql.types import LongType

events, variant = sys.argv[1], sys.argv[2]

builder = (
    SparkSession.builder.appName(f"orders-{variant}")
    .master("local[2]")
    .config("spark.eventLog.enabled", "true")
    .config("spark.eventLog.dir", f"file://{events}")
    .config("spark.ui.enabled", "false")
    .config("spark.driver.host", "127.0.0.1")
    .config("spark.driver.bindAddress", "127.0.0.1")
    .config("spark.sql.shuffle.partitions", "4")
    # A value the environment tool must never show.
    .config("spark.inquest.test.password", "hunter2")
)
if variant == "oom":
    # In local mode the executor is the driver: by default a task's OutOfMemoryError
    # kills that JVM, racing the event log's last writes. Depth 0 keeps the JVM up, so
    # the failed task and stage are always recorded, as a cluster's driver would.
    builder = (
        builder.config("spark.driver.memory", "512m")
        .config("spark.sql.shuffle.partitions", "2")
        .config("spark.executor.killOnFatalError.depth", "0")
    )
else:
    builder = builder.config("spark.driver.memory", "1g")
spark = builder.getOrCreate()
spark.sparkContext.setLogLevel("ERROR")
# The test harness reads which application this run became.
print(f"APP_ID={spark.sparkContext.applicationId}", flush=True)


@F.udf(LongType())
def parse_amount(record):
    # Records look like "<order id>,<amount in cents>"; a malformed one is a bug in
    # the upstream export, and the job should fail loudly on it.
    order, amount = record.split(",")
    return int(amount)


def run():
    if variant == "oom":
        spark.sparkContext.setJobDescription("gather every order into one group")
        # One task builds a 100-million-element array: far more than a 512m heap holds.
        rows = spark.range(0, 4, numPartitions=2).select(F.size(F.array_repeat(F.col("id"), 100_000_000)))
        rows.collect()
        return
    records = [f"{i},{i * 7 % 1000}" for i in range(10_000)]
    if variant == "bad_record":
        records[4242] = "4242,n/a"
    spark.sparkContext.setJobDescription("total order amounts per bucket")
    df = spark.createDataFrame([(r,) for r in records], ["record"]).repartition(4)
    totals = df.select(parse_amount("record").alias("amount")).groupBy((F.col("amount") % 10).alias("bucket")).sum("amount")
    totals.collect()


try:
    run()
finally:
    spark.stop()
