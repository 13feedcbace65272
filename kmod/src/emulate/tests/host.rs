//@ stage 10
