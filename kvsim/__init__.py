"""kvsim: KV-cache paging simulator and capacity planner."""
