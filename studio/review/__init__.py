"""The Review page's tabs: agreement, the queue (gold labels and comments), the team (assignment, who
holds what, pace), control items, settings, and export."""
