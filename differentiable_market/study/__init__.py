"""Walk-forward studies: is a method's edge skill or luck (plan, executors, statistics, report)."""
