"""lakebed: the modern data architecture in one Python package.

Quick start::

    import lakebed

    lh = lakebed.open("my-project")          # a folder made by `lakebed init my-project`
    lh.write("bronze.orders", [{"id": 1, "amount": 9.5}])
    lh.sql("select count(*) from bronze.orders").show()
    lh.table("bronze.orders").history()

Tables are Delta Lake tables named `layer.name` (bronze, silver, gold, quarantine); every
query reads one committed snapshot of each table it touches.
"""

from lakebed.errors import LakebedError
from lakebed.lakehouse import Lakehouse, init_project, open
from lakebed.process import QueryResult
from lakebed.storage import Table, WriteResult
from lakebed.transform import model

__version__ = "0.1.0"

__all__ = [
    "LakebedError",
    "Lakehouse",
    "QueryResult",
    "Table",
    "WriteResult",
    "__version__",
    "init_project",
    "model",
    "open",
]
