"""What keeps a search whole when its driver dies, its disk fills or it runs from a storage URI."""
