import numpy as np
import pyarrow.parquet as pq

from serving.scoring import prediction_from_row

table = pq.read_table("scored/")  # every shard; the _ files are skipped
for row in table.to_pylist():
    if row["error"]:  # an unreadable image still gets its row, with the reason
        print(row["id"], "error:", row["error"])
        continue
    depth = np.frombuffer(row["depth.map"], "<f2").reshape(row["depth.map_shape"])
    print(row["id"], row["background.label"], f"mean depth {depth.mean():.2f} m")
    prediction = prediction_from_row(row, table.schema)  # the /v1 "predictions" entry
