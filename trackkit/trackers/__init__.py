"""Built-in trackers, registered in pyproject's ``trackkit.trackers`` group like any third party's."""
