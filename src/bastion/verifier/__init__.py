"""Offline verifier for Bastion's audit log; public names only (see verify.py for the checklist)."""

from bastion.verifier.origin import Options
from bastion.verifier.report import Problem, ProblemKind, Report, SeqRange, Summary
from bastion.verifier.timestamps import TimestampTrust
from bastion.verifier.verify import verify_log

__all__ = ["Options", "Problem", "ProblemKind", "Report", "SeqRange", "Summary", "TimestampTrust", "verify_log"]
