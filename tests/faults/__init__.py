"""The fault suite (issue 19): stretto attacked with kills, signals, torn writes and full disks."""
