"""p2psched's tests: tests/<package>/test_<module>.py tests p2psched/<package>/<module>.py;
scenarios/ runs several roles together; harness/ holds what tests share."""
