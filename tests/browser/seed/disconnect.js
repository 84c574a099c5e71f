realtime.close();
