"""Tests of the response cache, its counts and page anchors: in process, and on a real 2-worker server."""
