"""Python client for the Training File Service (``trainingfiles.v1``).

A small public surface over private modules: the sync and asyncio clients (two faces of
one base), the operations their streaming calls return, the pagers their list calls
return, the retry policy a call may override, one error hierarchy mirroring the gRPC
status codes, the names of the outputs' formats and splits (`Format`, `Split`), a
build's split (`SplitOptions`), the conversations the database chooses (`Selector`),
the pairs a file keeps (`PairFilter`),
and the checked download of an output (`download`, `Downloaded`, `DownloadError`).
Requests and replies are the generated messages of ``trainingfiles.v1``
(``resources_pb2``, ``service_pb2``).

Example:
    >>> from trainingfiles_client import TrainingFilesClient
    >>> with TrainingFilesClient() as client:  # TRAININGFILES_TARGET / _TOKEN / _TLS
    ...     training_file = client.create_training_file("demo", ids).result()

The ``trainingfiles`` command-line tool (``pip install trainingfiles-client[cli]``) is
built on exactly this surface.
"""

from ._async_client import AsyncTrainingFilesClient
from ._client import TrainingFilesClient
from ._downloads import Downloaded, DownloadError, download
from ._exceptions import (
    Aborted,
    AlreadyExists,
    Cancelled,
    DataLoss,
    DeadlineExceeded,
    FailedPrecondition,
    Internal,
    InvalidArgument,
    NotFound,
    OutOfRange,
    PermissionDenied,
    ResourceExhausted,
    TrainingFilesError,
    Unauthenticated,
    Unavailable,
    Unimplemented,
    Unknown,
    Violation,
)
from ._methods import Retry
from ._operations import AsyncTrainingFileOperation, TrainingFileOperation
from ._outputs import Format, Split, SplitOptions
from ._pagers import AsyncPager, Pager
from ._selectors import PairFilter, Selector

__all__ = [
    "Aborted",
    "AlreadyExists",
    "AsyncPager",
    "AsyncTrainingFileOperation",
    "AsyncTrainingFilesClient",
    "Cancelled",
    "DataLoss",
    "DeadlineExceeded",
    "DownloadError",
    "Downloaded",
    "FailedPrecondition",
    "Format",
    "Internal",
    "InvalidArgument",
    "NotFound",
    "OutOfRange",
    "Pager",
    "PairFilter",
    "PermissionDenied",
    "ResourceExhausted",
    "Retry",
    "Selector",
    "Split",
    "SplitOptions",
    "TrainingFileOperation",
    "TrainingFilesClient",
    "TrainingFilesError",
    "Unauthenticated",
    "Unavailable",
    "Unimplemented",
    "Unknown",
    "Violation",
    "download",
]

# Report the public names as living here, not in the private modules (httpx does the same).
for _name in __all__:
    globals()[_name].__module__ = "trainingfiles_client"
del _name
