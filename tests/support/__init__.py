"""Test harness: scenario trees and snapshots, kernel mounts, erofs-utils."""
