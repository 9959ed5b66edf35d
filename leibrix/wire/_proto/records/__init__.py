"""protoc-generated (upb) messages of proto/leibrix_cp; see proto/generate.py."""
