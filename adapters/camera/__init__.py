"""Camera-feed adapter: live video in, alerts out (see docs/camera-adapter.md)."""
