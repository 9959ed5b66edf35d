"""The committed generated wire code matches proto/ (``make proto`` was run after every .proto change)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_committed_generated_code_is_not_stale() -> None:
    result = subprocess.run(
        [sys.executable, str(ROOT / "proto" / "generate.py"), "--check"],
        capture_output=True, text=True, check=False, cwd=ROOT,
    )
    assert result.returncode == 0, result.stderr + result.stdout
    assert "up to date" in result.stdout


def test_upstream_numbers_are_kept() -> None:
    """Spot-check the upstream wire contract: upstream clients depend on these names and numbers."""
    from leibrix.wire._proto.records import common_pb2, control_plane_pb2, management_pb2

    def numbers(message: type) -> dict[str, int]:
        return {f.name: f.number for f in message.DESCRIPTOR.fields}

    assert numbers(management_pb2.TenantQuota).items() >= {
        "tenant_id": 1, "max_datasets": 2, "max_epochs": 3, "max_storage_mb": 4}.items()
    assert numbers(management_pb2.AdmitDatasetRequest).items() >= {
        "tenant_id": 1, "dataset_id": 2, "source": 3, "epoch_granularity": 4}.items()
    assert numbers(control_plane_pb2.EventStreamMessage).items() >= {
        "event_id": 1, "tenant_id": 2, "worker_id": 3, "register_event": 4, "heartbeat_event": 5,
        "data_pull_status_update": 6, "data_assignment": 7, "common_ack": 8}.items()
    assert numbers(common_pb2.CommonResponse) == {"status": 1, "message": 2}
    assert management_pb2.DESCRIPTOR.package == "leibrix_cp"
    assert [m.name for m in management_pb2.DESCRIPTOR.services_by_name["ManagementService"].methods][:2] == [
        "AdmitDataset", "UpsertTenantQuota"]
