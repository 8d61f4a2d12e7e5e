"""Small files kept in a streaming checkpoint, read and written through Hadoop's FileSystem API.

The checkpoint may be on HDFS, S3 or a cluster's shared disk: a file the driver wrote to its local disk
would be lost when a cluster-mode driver restarts on another host, so these go where Spark's own
checkpoint files go, through the same FileSystem (and its credentials).
"""
from __future__ import annotations


def _fs_and_path(spark, location: str):
    jvm = spark._jvm
    path = jvm.org.apache.hadoop.fs.Path(location)
    return path.getFileSystem(spark._jsc.hadoopConfiguration()), path


def read_text(spark, location: str) -> str | None:
    """The file's text, or None when it does not exist."""
    fs, path = _fs_and_path(spark, location)
    if not fs.exists(path):
        return None
    stream = fs.open(path)
    try:
        data = spark._jvm.org.apache.commons.io.IOUtils.toByteArray(stream)
    finally:
        stream.close()
    return bytes(data).decode("utf-8")


def write_text_once(spark, location: str, text: str) -> str:
    """Create the file with `text` unless it exists; return what the file holds afterwards (a concurrent
    first start of the same checkpoint may have won the race)."""
    fs, path = _fs_and_path(spark, location)
    fs.mkdirs(path.getParent())
    try:
        stream = fs.create(path, False)  # overwrite=False: fails if another writer created it first
        try:
            stream.write(bytearray(text.encode("utf-8")))
        finally:
            stream.close()
    except Exception:  # noqa: BLE001 - py4j wraps FileAlreadyExistsException; the file's text decides
        existing = read_text(spark, location)
        if existing is None:
            raise
        return existing
    return text
