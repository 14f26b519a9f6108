"""A transparency log over the audit trail: RFC 9162 Merkle trees and C2SP checkpoints."""
