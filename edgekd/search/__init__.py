"""`edgekd search`: derive the student from the teacher for a budget measured on the device."""
