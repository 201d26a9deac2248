"""A job's life: its record and status transitions, the queue, submission to Ray, the driver, resume, and the loop that follows a job to its end."""
