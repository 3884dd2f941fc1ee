"""Every table, imported in one place for Alembic's autogenerate and for tests."""

from service.auth.models import ApiKey, WebSession
from service.datasets.models import UploadedDataset
from service.db import Base
from service.jobs.models import Job
from service.models.models import UploadedModel
from service.notifications.models import WebhookAttempt, WebhookDelivery, WebhookSecret
from service.range_tests.models import RangeTest
from service.studies.models import CurvePoint, Study, Trial
from service.workers.models import WorkerRow

metadata = Base.metadata
__all__ = [
    "ApiKey",
    "CurvePoint", "Job", "RangeTest", "Study", "Trial", "UploadedDataset", "UploadedModel",
    "WebSession", "WebhookAttempt", "WebhookDelivery", "WebhookSecret",
    "WorkerRow", "metadata"]
