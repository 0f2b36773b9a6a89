"""The bookstore's Recommendations service over gRPC, protected and called by microcall."""
